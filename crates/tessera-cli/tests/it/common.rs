//! Helpers: running the binary, projects in temporary folders, the Python clients.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;

use tessera_sample::synth::{GenConfig, GenSummary, generate};

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

    /// Imports the sample data's three channels (web, app, POS), each as its source.
    pub fn import_sample_channels(&self, data: &Path) {
        for (file, source) in [
            ("events-web.ndjson", "web"),
            ("events-app.ndjson", "app"),
            ("events-pos.ndjson", "pos"),
        ] {
            self.import(&[data.join(file).to_str().unwrap(), "--source", source]);
        }
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

/// Python: `any_command(name, fields)`, a Flight SQL command (`google.protobuf.Any` of
/// `arrow.flight.protocol.sql.NAME` with length-delimited `fields`), for speaking Flight
/// SQL by hand with `pyarrow.flight`.
pub const ANY_COMMAND: &str = include_str!("../../../../tests/clients/any_command.py");

/// The folder holding the pinned npm test clients' `node_modules` (installed on first
/// use by `tests/clients/npm.sh`).
pub fn npm_clients() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/clients/npm.sh");
        let out = Command::new("bash")
            .arg(&script)
            .output()
            .expect("running npm.sh");
        assert!(
            out.status.success(),
            "npm.sh failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    })
    .clone()
}

/// A port free on loopback now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Runs a Python snippet with the test clients; returns its stdout.
///
/// A snippet that finishes leaves with `os._exit(0)` once its output is flushed: the
/// interpreter's own teardown can abort the process ("terminate called without an active
/// exception") while a native client's runtime threads (deltalake's) are still winding
/// down, after the snippet's work and output are complete. An exception still exits 1.
pub fn run_python(code: &str) -> String {
    let code = format!(
        "{code}\nimport os as _os, sys as _sys\n_sys.stdout.flush()\n_sys.stderr.flush()\n_os._exit(0)\n"
    );
    let out = Command::new(python())
        .arg("-c")
        .arg(&code)
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

/// `tessera user add ARGS... --password-stdin` with `stdin`; returns success and
/// stderr.
pub fn add_user(p: &TestProject, args: &[&str], stdin: &str) -> (bool, String) {
    let mut all = vec!["user", "add"];
    all.extend_from_slice(args);
    all.push("--password-stdin");
    let mut child = p
        .cmd(&all)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Adds a user with `password`, which must succeed.
pub fn added(p: &TestProject, args: &[&str], password: &str) {
    let (okay, e) = add_user(p, args, &format!("{password}\n"));
    assert!(okay, "{e}");
}

/// A running `tessera serve`, killed if the test fails before [`stop`].
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `tessera serve` with both ports on loopback; returns the server and the gRPC and
/// HTTP addresses (`HOST:PORT`).
pub fn serve(p: &TestProject) -> (Running, String, String) {
    serve_with_env(p, &[])
}

/// [`serve`] with extra environment variables (secrets of destinations, say).
pub fn serve_with_env(p: &TestProject, env: &[(&str, &str)]) -> (Running, String, String) {
    serve_at(p, "127.0.0.1:0", env)
}

/// [`serve_with_env`] with the HTTP port at `http` (`HOST:PORT`).
pub fn serve_at(p: &TestProject, http: &str, env: &[(&str, &str)]) -> (Running, String, String) {
    let mut child = tessera()
        .arg("--project")
        .arg(p.path())
        .args(["serve", "--http", http, "--grpc", "127.0.0.1:0"])
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting tessera serve");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let (mut grpc, mut http) = (None, None);
    let first_word = |rest: &str| {
        let word = rest.split_whitespace().next().unwrap_or_default();
        let word = word.trim_end_matches(':');
        word.rsplit("//").next().unwrap_or(word).to_owned()
    };
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("HTTP collector listening on ") {
            http = Some(first_word(rest));
        }
        if let Some(rest) = line.strip_prefix("gRPC listening on ") {
            grpc = Some(first_word(rest));
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    (
        Running(child),
        grpc.expect("the gRPC address"),
        http.expect("the HTTP address"),
    )
}

/// Stops `tessera serve` cleanly (SIGTERM) and checks it exited successfully.
pub fn stop(mut running: Running) {
    let _ = Command::new("kill")
        .args(["-TERM", &running.0.id().to_string()])
        .status();
    let stopped = running.0.wait().unwrap();
    assert!(stopped.success(), "tessera serve exited with {stopped}");
}
