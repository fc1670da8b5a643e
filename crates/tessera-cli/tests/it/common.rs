//! Helpers: running the binary, projects in temporary folders, the Python clients.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use tessera_bench::synth::{GenConfig, GenSummary, generate};

/// A `tessera` command.
pub fn tessera() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tessera"));
    c.env_remove("TESSERA_PROJECT")
        .env_remove("TESSERA_LAKE_URL");
    c
}

/// Runs and returns the output, panicking with stderr when it fails.
pub fn ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("running tessera");
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs a command that must fail; returns its stderr.
pub fn fails(cmd: &mut Command) -> String {
    let out = cmd.output().expect("running tessera");
    assert!(
        !out.status.success(),
        "{cmd:?} should have failed:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A new project in a temporary folder.
pub struct TestProject {
    pub dir: tempfile::TempDir,
}

impl TestProject {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        ok(tessera().arg("init").arg(dir.path()));
        TestProject { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `tessera --project DIR ARGS...`
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = tessera();
        c.arg("--project").arg(self.path()).args(args);
        c
    }

    /// `tessera import --json ARGS...`, parsed.
    pub fn import(&self, args: &[&str]) -> serde_json::Value {
        let mut c = self.cmd(&["import", "--json"]);
        c.args(args);
        let out = ok(&mut c);
        serde_json::from_slice(&out.stdout).expect("import --json prints JSON")
    }

    /// `tessera sql --format json QUERY`, parsed into rows.
    pub fn sql(&self, query: &str) -> Vec<serde_json::Value> {
        let out = ok(&mut self.cmd(&["sql", "--format", "json", query]));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON row"))
            .collect()
    }

    /// A single integer from `SELECT … AS n`.
    pub fn count(&self, query: &str) -> i64 {
        let rows = self.sql(query);
        rows[0]["n"]
            .as_i64()
            .unwrap_or_else(|| panic!("{query}: {rows:?}"))
    }

    /// The lake folder.
    pub fn lake(&self) -> PathBuf {
        self.path().join("tessera-data")
    }
}

/// Generated sample data, made once per test process.
pub fn sample_data() -> &'static (PathBuf, GenSummary) {
    static DATA: OnceLock<(PathBuf, GenSummary)> = OnceLock::new();
    DATA.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir").keep();
        let config = GenConfig {
            events: 20_000,
            days: 90,
            ..GenConfig::default()
        };
        let summary = generate(&config, &dir).expect("generate");
        (dir, summary)
    })
}

/// The pinned Python with the test clients (bootstrapped into a venv on first use).
pub fn python() -> PathBuf {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/clients/venv.sh");
        let out = Command::new("bash")
            .arg(&script)
            .output()
            .expect("running venv.sh");
        assert!(
            out.status.success(),
            "venv.sh failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    })
    .clone()
}

/// Runs a Python snippet with the test clients; returns its stdout.
pub fn run_python(code: &str) -> String {
    let out = Command::new(python())
        .arg("-c")
        .arg(code)
        .output()
        .expect("running python");
    assert!(
        out.status.success(),
        "python failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        code
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
