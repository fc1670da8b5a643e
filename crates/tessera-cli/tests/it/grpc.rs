//! The `tessera.v1` gRPC API end to end: `tessera serve` (the real binary) on loopback,
//! driven by a Python client whose stubs `grpcio-tools` generates from `proto/` at
//! test time, plus the standard reflection client; users from `tessera user add`, an
//! API token from `tessera token add`; TLS on both ports from a generated certificate.

use std::process::Command;

use serde_json::Value;

use crate::common::{TestProject, added, fails, ok, python, serve, stop};

const PASSWORD: &str = "s3cret-passw0rd";

/// Generates the stubs into a temporary folder and imports them; defines `call`.
pub(crate) const PRELUDE: &str = r#"
import json, os, sys, tempfile
import grpc
import grpc_tools
from grpc_tools import protoc

proto = sys.argv[1]
stubs = tempfile.mkdtemp()
files = [os.path.join(proto, "tessera", "v1", f) for f in ("auth.proto", "profile.proto", "audience.proto", "admin.proto")]
well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
assert protoc.main(["protoc", "-I" + proto, "-I" + well_known, "--python_out=" + stubs, "--grpc_python_out=" + stubs] + files) == 0
sys.path.insert(0, stubs)
from tessera.v1 import admin_pb2, admin_pb2_grpc, audience_pb2, audience_pb2_grpc, auth_pb2, auth_pb2_grpc, profile_pb2, profile_pb2_grpc
from google.protobuf import json_format

out = {}

def call(name, fn):
    """Runs fn(); records the JSON of its result, or the gRPC code and message."""
    try:
        r = fn()
        out[name] = json_format.MessageToDict(r, preserving_proto_field_name=True) if hasattr(r, "DESCRIPTOR") else r
    except grpc.RpcError as e:
        out[name] = {"code": e.code().name, "message": e.details()}
"#;

const CLIENT: &str = r#"
target, password, api_token, merged_away = sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
channel = grpc.insecure_channel(target)
auth = auth_pb2_grpc.AuthServiceStub(channel)
profiles = profile_pb2_grpc.ProfileServiceStub(channel)
audiences = audience_pb2_grpc.AudienceServiceStub(channel)
admin = admin_pb2_grpc.AdminServiceStub(channel)

def login(user, pw=password):
    return [("authorization", "Bearer " + auth.Login(auth_pb2.LoginRequest(user=user, password=pw)).token)]

def ident(t, v):
    return profile_pb2.Identifier(type=t, value=v)

def get(t, v, md):
    return profiles.GetProfile(profile_pb2.GetProfileRequest(identifier=ident(t, v)), metadata=md)

# Refusals first: no token, a forged one, a wrong password.
call("no_token", lambda: get("email", "jane@example.com", None))
call("forged", lambda: get("email", "jane@example.com", [("authorization", "Bearer forged")]))
call("wrong_password", lambda: auth.Login(auth_pb2.LoginRequest(user="root", password="nope")))

root, ana, mark, ing = login("root"), login("ana"), login("mark"), login("ing")
app = [("authorization", "Bearer " + api_token)]
call("login", lambda: auth.Login(auth_pb2.LoginRequest(user="ana", password=password)))

# The index is from before day 2: laptop-1 is its own profile.
call("before_stitch", lambda: get("anonymous_id", "laptop-1", root))

# Admin: stitch day 2 (merges the laptop into Jane) and refresh segments; the index
# reloads after each.
call("marketer_stitch", lambda: admin.Stitch(admin_pb2.StitchRequest(), metadata=mark))
call("stitch", lambda: admin.Stitch(admin_pb2.StitchRequest(), metadata=root))
call("refresh", lambda: admin.RefreshSegments(admin_pb2.RefreshSegmentsRequest(), metadata=root))

# Look-ups: by e-mail as typed, by anonymous id, by the merged-away profile id.
call("by_email", lambda: get("email", "  Jane@Example.COM ", root))
call("by_anonymous_id", lambda: get("anonymous_id", "laptop-1", root))
call("by_merged_id", lambda: get("profile_id", merged_away, root))
call("masked", lambda: get("email", "jane@example.com", ana))
call("marketer", lambda: get("user_id", "u1", mark))
call("api_token", lambda: get("user_id", "u1", app))
call("ingest", lambda: get("user_id", "u1", ing))
call("not_found", lambda: get("email", "nobody@example.com", root))
call("bad_email", lambda: get("email", "not an email", root))
call("bad_type", lambda: get("shoe_size", "42", root))
call("no_identifier", lambda: profiles.GetProfile(profile_pb2.GetProfileRequest(), metadata=root))
call("batch", lambda: profiles.BatchGetProfiles(profile_pb2.BatchGetProfilesRequest(identifiers=[
    ident("user_id", "u1"), ident("email", "nobody@example.com"), ident("email", "???")]), metadata=ana))
call("too_many", lambda: profiles.BatchGetProfiles(profile_pb2.BatchGetProfilesRequest(
    identifiers=[ident("user_id", "u1")] * 1001), metadata=root))

# Audiences.
call("segments", lambda: audiences.ListSegments(audience_pb2.ListSegmentsRequest(), metadata=mark))
call("member", lambda: audiences.CheckMembership(audience_pb2.CheckMembershipRequest(segment="pro_plan", identifier=ident("anonymous_id", "phone-1")), metadata=mark))
call("not_member", lambda: audiences.CheckMembership(audience_pb2.CheckMembershipRequest(segment="pro_plan", identifier=ident("user_id", "u2")), metadata=mark))
call("unknown_segment", lambda: audiences.CheckMembership(audience_pb2.CheckMembershipRequest(segment="nope", identifier=ident("user_id", "u1")), metadata=mark))
def stream(since):
    return [json_format.MessageToDict(c, preserving_proto_field_name=True) for chunk in audiences.StreamAudience(audience_pb2.StreamAudienceRequest(segment="pro_plan", since_version=since), metadata=mark) for c in chunk.changes]
call("members", lambda: stream(0))
call("changes", lambda: stream(1))

# Reflection, as grpcurl and Postman use it.
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
db = ProtoReflectionDescriptorDatabase(channel)
out["services"] = sorted(db.get_services())
out["reflected_method"] = db.FindFileContainingSymbol("tessera.v1.ProfileService").name
print(json.dumps(out))
"#;

fn run_client(script: &str, args: &[&str]) -> Value {
    run_client_with(PRELUDE, script, args)
}

/// Runs `prelude` then `script` with the proto folder and `args` as arguments; returns
/// the JSON it prints.
pub(crate) fn run_client_with(prelude: &str, script: &str, args: &[&str]) -> Value {
    let proto = concat!(env!("CARGO_MANIFEST_DIR"), "/../../proto");
    let out = Command::new(python())
        .arg("-c")
        .arg(format!("{prelude}{script}"))
        .arg(proto)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python client failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn code(v: &Value) -> &str {
    v["code"].as_str().unwrap_or("ok")
}

/// Day 1: Jane on her phone, an anonymous laptop. Day 2: the laptop signs in as Jane
/// (a merge), then a second user on the laptop (rejected by the identifier limit).
fn two_days(p: &TestProject) -> std::path::PathBuf {
    let day1 = p.path().join("day1.ndjson");
    let day2 = p.path().join("day2.ndjson");
    std::fs::write(
        &day1,
        concat!(
            r#"{"type":"identify","messageId":"m1","anonymousId":"phone-1","userId":"u1","traits":{"email":"  Jane@Example.COM ","first_name":"Jane","address":{"street":"12 High St","city":"Leeds"},"plan":"free"},"timestamp":"2026-01-01T10:00:00Z"}"#, "\n",
            r#"{"type":"page","messageId":"m2","anonymousId":"laptop-1","name":"Home","timestamp":"2026-01-02T10:00:00Z"}"#, "\n",
            r#"{"type":"identify","messageId":"m6","userId":"u2","traits":{"email":"kid@example.com","plan":"free"},"timestamp":"2026-01-02T12:00:00Z"}"#, "\n",
        ),
    )
    .unwrap();
    std::fs::write(
        &day2,
        concat!(
            r#"{"type":"identify","messageId":"m4","anonymousId":"laptop-1","userId":"u1","traits":{"plan":"pro"},"timestamp":"2026-01-03T10:00:00Z"}"#, "\n",
            r#"{"type":"identify","messageId":"m5","anonymousId":"laptop-1","userId":"u2","traits":{"email":"kid@example.com"},"timestamp":"2026-01-04T10:00:00Z"}"#, "\n",
        ),
    )
    .unwrap();
    p.import(&[day1.to_str().unwrap()]);
    ok(&mut p.cmd(&["stitch"]));
    // One segment of our own instead of the examples.
    let segments = p.path().join("sql/segments");
    std::fs::remove_dir_all(&segments).unwrap();
    std::fs::create_dir_all(&segments).unwrap();
    std::fs::write(
        segments.join("pro_plan.sql"),
        "-- description: customers on the pro plan\n\
         SELECT profile_id FROM profiles WHERE json_get_str(traits, 'plan') = 'pro'\n",
    )
    .unwrap();
    ok(&mut p.cmd(&["segments", "refresh"]));
    p.import(&[day2.to_str().unwrap()]);
    day2
}

#[test]
fn applications_look_profiles_up_over_tessera_v1() {
    let p = TestProject::new();
    two_days(&p);
    let laptop =
        p.sql("SELECT profile_id FROM identity_map WHERE id_value = 'laptop-1'")[0]["profile_id"]
            .as_str()
            .unwrap()
            .to_owned();
    added(&p, &["root", "--role", "admin", "--pii"], PASSWORD);
    added(&p, &["ana", "--role", "analyst"], PASSWORD);
    added(&p, &["mark", "--role", "marketer"], PASSWORD);
    added(&p, &["ing", "--role", "ingest"], PASSWORD);
    let token = ok(&mut p.cmd(&["token", "add", "crm", "--role", "marketer", "--pii"]));
    let token = String::from_utf8_lossy(&token.stdout).trim().to_owned();
    let toml = std::fs::read_to_string(p.path().join("tessera.toml")).unwrap();
    assert!(
        token.len() == 64 && !toml.contains(&token) && toml.contains("[tokens.crm]"),
        "only the digest is stored"
    );
    let listed = ok(&mut p.cmd(&["token", "list"]));
    assert!(String::from_utf8_lossy(&listed.stdout).contains("crm"));

    let (child, grpc, _) = serve(&p);
    let v = run_client(CLIENT, &[&grpc, PASSWORD, &token, &laptop]);
    stop(child);

    // Refusals.
    assert_eq!(code(&v["no_token"]), "UNAUTHENTICATED", "{v}");
    assert_eq!(code(&v["forged"]), "UNAUTHENTICATED", "{v}");
    assert_eq!(code(&v["wrong_password"]), "UNAUTHENTICATED", "{v}");
    assert_eq!(v["login"]["role"], "analyst");
    assert_eq!(code(&v["marketer_stitch"]), "PERMISSION_DENIED", "{v}");
    assert_eq!(code(&v["ingest"]), "PERMISSION_DENIED", "{v}");

    // Before the admin stitch, the laptop was its own profile; after it, the merge.
    assert_eq!(v["before_stitch"]["profile"]["profile_id"], laptop.as_str());
    assert_eq!(v["stitch"]["merges"], "1", "{v}");
    let refreshed = &v["refresh"]["segments"][0];
    assert_eq!(
        (
            &refreshed["segment"],
            &refreshed["status"],
            &refreshed["members"],
            &refreshed["entered"]
        ),
        (
            &Value::from("pro_plan"),
            &Value::from("refreshed"),
            &Value::from("1"),
            &Value::from("1")
        ),
        "{v}"
    );
    let jane = p.sql("SELECT profile_id FROM identity_map WHERE id_value = 'u1'")[0]["profile_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(jane, laptop);
    for how in ["by_email", "by_anonymous_id", "by_merged_id"] {
        assert_eq!(v[how]["profile"]["profile_id"], jane.as_str(), "{how}: {v}");
    }
    assert_eq!(v["by_merged_id"]["merged_from"], laptop.as_str());
    assert_eq!(
        v["by_email"]["identifier"],
        serde_json::json!({"type": "email", "value": "jane@example.com"}),
        "normalized as stitching normalizes"
    );

    // The whole profile: identifiers, golden traits, segments, the snapshot.
    let profile = &v["by_email"]["profile"];
    let ids: Vec<String> = profile["identifiers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            format!(
                "{}:{}",
                i["type"].as_str().unwrap(),
                i["value"].as_str().unwrap()
            )
        })
        .collect();
    let expected: Vec<String> = p
        .sql(&format!(
            "SELECT id_type || ':' || id_value AS id FROM identity_map WHERE profile_id = '{jane}' ORDER BY first_seen, id_type, id_value"
        ))
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, expected);
    assert!(ids.contains(&"anonymous_id:laptop-1".to_owned()), "{ids:?}");
    assert_eq!(profile["traits"]["plan"], "pro", "{profile}");
    assert_eq!(profile["traits"]["email"], "jane@example.com", "{profile}");
    assert_eq!(profile["traits"]["address"]["city"], "Leeds", "{profile}");
    assert_eq!(profile["segments"][0]["segment"], "pro_plan", "{profile}");
    let snapshot = &v["by_email"]["snapshot"];
    assert_eq!(
        snapshot["profiles"],
        p.count("SELECT count(*) AS n FROM profiles").to_string()
    );

    // Without the pii grant: e-mail identifiers and personal traits masked, at any depth.
    let masked = &v["masked"]["profile"];
    assert_eq!(masked["profile_id"], jane.as_str());
    assert_eq!(masked["traits"]["email"], "***", "{masked}");
    assert_eq!(masked["traits"]["address"], "***", "{masked}");
    assert_eq!(masked["traits"]["plan"], "pro", "{masked}");
    assert!(
        masked["identifiers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["type"] != "email" || i["value"] == "***"),
        "{masked}"
    );
    assert_eq!(v["masked"]["identifier"]["value"], "***");
    assert!(!v["masked"].to_string().contains("example.com"), "{masked}");
    assert_eq!(v["marketer"]["profile"]["traits"]["email"], "***");
    assert_eq!(
        v["api_token"]["profile"]["traits"]["email"],
        "jane@example.com"
    );

    // Errors a person can act on.
    assert_eq!(code(&v["not_found"]), "NOT_FOUND");
    assert!(
        v["not_found"]["message"]
            .as_str()
            .unwrap()
            .contains("no profile holds email:")
    );
    assert_eq!(code(&v["bad_email"]), "INVALID_ARGUMENT");
    assert!(
        v["bad_email"]["message"]
            .as_str()
            .unwrap()
            .contains("not a valid email")
    );
    assert_eq!(code(&v["bad_type"]), "INVALID_ARGUMENT");
    assert!(
        v["bad_type"]["message"].as_str().unwrap().contains(
            "unknown identifier type \"shoe_size\": known types are profile_id, anonymous_id"
        ),
        "{v}"
    );
    assert_eq!(code(&v["no_identifier"]), "INVALID_ARGUMENT");
    assert_eq!(code(&v["too_many"]), "INVALID_ARGUMENT");
    let batch = v["batch"]["results"].as_array().unwrap();
    assert_eq!(batch.len(), 3);
    assert_eq!(batch[0]["profile"]["profile_id"], jane.as_str());
    assert!(batch[1].get("profile").is_none() && batch[1].get("error").is_none());
    assert!(
        batch[2]["error"]
            .as_str()
            .unwrap()
            .contains("not a valid email")
    );

    // Audiences.
    let segments = v["segments"]["segments"].as_array().unwrap();
    assert_eq!(segments.len(), 1, "{v}");
    assert_eq!(segments[0]["name"], "pro_plan");
    assert_eq!(segments[0]["description"], "customers on the pro plan");
    assert_eq!(segments[0]["members"], "1");
    assert_eq!(segments[0]["refresh_version"], "2");
    assert_eq!(v["member"]["member"], true, "{v}");
    assert_eq!(v["member"]["profile_id"], jane.as_str());
    assert!(
        v["not_member"].get("member").is_none(),
        "false is the default: {v}"
    );
    assert_eq!(code(&v["unknown_segment"]), "NOT_FOUND");
    assert!(
        v["unknown_segment"]["message"]
            .as_str()
            .unwrap()
            .contains("known: pro_plan")
    );
    assert_eq!(v["members"].as_array().unwrap().len(), 1);
    assert_eq!(v["members"][0]["kind"], "MEMBER");
    assert_eq!(v["members"][0]["profile_id"], jane.as_str());
    assert_eq!(v["changes"][0]["kind"], "ENTERED", "{v}");
    assert_eq!(v["changes"][0]["refresh_version"], "2");

    // Reflection lists every service.
    let services = v["services"].as_array().unwrap();
    for s in [
        "tessera.v1.AdminService",
        "tessera.v1.AudienceService",
        "tessera.v1.AuthService",
        "tessera.v1.ProfileService",
        "grpc.health.v1.Health",
    ] {
        assert!(services.iter().any(|x| x == s), "{s} in {services:?}");
    }
    assert_eq!(v["reflected_method"], "tessera/v1/profile.proto");

    // The audit log: every look-up and refusal, with no e-mail address in it.
    let audited = |filter: &str| {
        p.count(&format!(
            "SELECT count(*) AS n FROM audit_log WHERE {filter}"
        ))
    };
    let log = serde_json::to_string_pretty(
        &p.sql("SELECT \"user\", role, action, status, rows, target FROM audit_log ORDER BY at"),
    )
    .unwrap();
    assert!(
        audited("action = 'get_profile' AND status = 'ok' AND \"user\" = 'root' AND rows = 1") >= 4,
        "{log}"
    );
    assert_eq!(
        audited(&format!(
            "action = 'get_profile' AND \"user\" = 'root' AND target = 'email:*** -> {jane}'"
        )),
        1,
        "{log}"
    );
    assert_eq!(
        audited("action = 'get_profile' AND status = 'not_found'"),
        1,
        "{log}"
    );
    assert_eq!(
        audited("\"user\" = 'token:crm' AND action = 'get_profile'"),
        1,
        "{log}"
    );
    assert!(audited("status = 'unauthenticated'") >= 3, "{log}");
    assert_eq!(
        audited("status = 'permission_denied' AND \"user\" = 'ing'"),
        1,
        "{log}"
    );
    assert_eq!(audited("action = 'stitch' AND status = 'ok'"), 1, "{log}");
    assert_eq!(
        audited("action = 'stream_audience' AND status = 'ok'"),
        2,
        "{log}"
    );
    assert_eq!(audited("target LIKE '%@%'"), 0, "{log}");
}

const TLS_CLIENT: &str = r#"
import ssl, urllib.request, urllib.error, base64
grpc_target, http_target, ca = sys.argv[2], sys.argv[3], sys.argv[4]
with open(ca, "rb") as f:
    root = f.read()
secure = grpc.secure_channel(grpc_target, grpc.ssl_channel_credentials(root_certificates=root))
call("secure_login", lambda: auth_pb2_grpc.AuthServiceStub(secure).Login(auth_pb2.LoginRequest(user="root", password=sys.argv[5])))
plain = grpc.insecure_channel(grpc_target)
call("plain_login", lambda: auth_pb2_grpc.AuthServiceStub(plain).Login(auth_pb2.LoginRequest(user="root", password=sys.argv[5]), timeout=5))
context = ssl.create_default_context(cafile=ca)
body = json.dumps({"batch": [{"type": "track", "event": "Signed Up", "userId": "u9", "messageId": "tls-1"}]}).encode()
request = urllib.request.Request("https://" + http_target + "/v1/batch", data=body, headers={
    "Content-Type": "application/json", "Authorization": "Basic " + base64.b64encode(b"wk_tls_0123456789:").decode()})
with urllib.request.urlopen(request, context=context) as r:
    out["https"] = r.status
try:
    urllib.request.urlopen("http://" + http_target + "/health", timeout=5)
    out["plain_http"] = "accepted"
except Exception as e:
    out["plain_http"] = type(e).__name__
print(json.dumps(out))
"#;

#[test]
fn both_ports_speak_tls_from_the_configured_pair() {
    let p = TestProject::new();
    added(&p, &["root", "--role", "admin"], PASSWORD);
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    std::fs::write(p.path().join("server.crt"), cert.cert.pem()).unwrap();
    std::fs::write(
        p.path().join("server.key"),
        cert.signing_key.serialize_pem(),
    )
    .unwrap();
    let toml = p.path().join("tessera.toml");
    let mut text = std::fs::read_to_string(&toml).unwrap();
    let wrong = text.replace(
        "[server]\n",
        "[server]\ntls = { cert = \"missing.crt\", key = \"server.key\" }\n",
    );
    assert_ne!(wrong, text, "tessera.toml has a [server] table");
    std::fs::write(&toml, &wrong).unwrap();
    let e = fails(&mut p.cmd(&["serve", "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"]));
    assert!(
        e.contains("cannot read the TLS certificate") && e.contains("missing.crt"),
        "{e}"
    );
    text = text.replace(
        "[server]\n",
        "[server]\ntls = { cert = \"server.crt\", key = \"server.key\" }\n",
    );
    text.push_str("\n[sources.tls]\nwrite_key = \"wk_tls_0123456789\"\n");
    std::fs::write(&toml, &text).unwrap();

    let (child, grpc, http) = serve(&p);
    let grpc = grpc.replace("127.0.0.1", "localhost");
    let http = http.replace("127.0.0.1", "localhost");
    let ca = p.path().join("server.crt");
    let v = run_client(TLS_CLIENT, &[&grpc, &http, ca.to_str().unwrap(), PASSWORD]);
    stop(child);
    assert_eq!(v["secure_login"]["role"], "admin", "{v}");
    assert_eq!(code(&v["plain_login"]), "UNAVAILABLE", "{v}");
    assert_eq!(v["https"], 200, "{v}");
    assert_ne!(v["plain_http"], "accepted", "{v}");
    assert_eq!(
        p.count("SELECT count(*) AS n FROM events WHERE message_id = 'tls-1'"),
        1,
        "the event sent over HTTPS was committed"
    );
}

const SAME_ANSWERS: &str = r#"
target, password = sys.argv[2], sys.argv[3]
asked = json.loads(sys.argv[4])
channel = grpc.insecure_channel(target)
auth = auth_pb2_grpc.AuthServiceStub(channel)
profiles = profile_pb2_grpc.ProfileServiceStub(channel)
md = [("authorization", "Bearer " + auth.Login(auth_pb2.LoginRequest(user="root", password=password)).token)]
for t, v in asked:
    call(t + ":" + v, lambda: profiles.GetProfile(profile_pb2.GetProfileRequest(identifier=profile_pb2.Identifier(type=t, value=v)), metadata=md))
print(json.dumps(out))
"#;

/// `tessera profile` and `GetProfile` answer from the same resolver and snapshot: the
/// same profile (or the same refusal) for every identifier, as typed by people.
#[test]
fn the_cli_and_get_profile_give_the_same_answers() {
    let (data, _) = crate::common::sample_data();
    let p = TestProject::new();
    p.import_sample_channels(data);
    ok(&mut p.cmd(&["stitch"]));
    added(&p, &["root", "--role", "admin", "--pii"], PASSWORD);
    let mut asked: Vec<(String, String)> = Vec::new();
    for row in p.sql(
        "SELECT id_type, id_value, profile_id FROM identity_map ORDER BY md5(id_type || id_value) LIMIT 12",
    ) {
        let (t, v) = (row["id_type"].as_str().unwrap(), row["id_value"].as_str().unwrap());
        let pid = row["profile_id"].as_str().unwrap();
        // As people type them: upper case and spaces for e-mails, the `profile` alias.
        let typed = if t == "email" {
            format!("  {} ", v.to_uppercase())
        } else {
            v.to_owned()
        };
        asked.push((t.to_uppercase(), typed));
        asked.push(("profile".into(), pid.to_owned()));
    }
    for (t, v) in [
        ("email", "nobody@example.com"),
        ("email", "not an address"),
        ("shoe_size", "42"),
        ("profile_id", "p_does_not_exist"),
    ] {
        asked.push((t.into(), v.into()));
    }
    let (child, grpc, _) = serve(&p);
    let v = run_client(
        SAME_ANSWERS,
        &[&grpc, PASSWORD, &serde_json::to_string(&asked).unwrap()],
    );
    stop(child);
    for (t, value) in &asked {
        let answer = &v[format!("{t}:{value}")];
        let cli = p
            .cmd(&["profile", "--json", &format!("{t}:{value}")])
            .output()
            .unwrap();
        if cli.status.success() {
            let view: Value = serde_json::from_slice(&cli.stdout).unwrap();
            let profile = &answer["profile"];
            assert_eq!(
                profile["profile_id"], view["profile_id"],
                "{t}:{value}: {answer}"
            );
            let from_grpc: Vec<String> = profile["identifiers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| {
                    format!(
                        "{}:{}",
                        i["type"].as_str().unwrap(),
                        i["value"].as_str().unwrap()
                    )
                })
                .collect();
            let from_cli: Vec<String> = view["identifiers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| {
                    format!(
                        "{}:{}",
                        i["id_type"].as_str().unwrap(),
                        i["id_value"].as_str().unwrap()
                    )
                })
                .collect();
            assert_eq!(from_grpc, from_cli, "{t}:{value}");
            assert_eq!(
                answer["identifier"]["value"], view["id_value"],
                "normalized alike: {t}:{value}"
            );
        } else {
            let stderr = String::from_utf8_lossy(&cli.stderr);
            match code(answer) {
                "NOT_FOUND" => {
                    assert!(stderr.contains("no profile holds"), "{t}:{value}: {stderr}")
                }
                "INVALID_ARGUMENT" => {
                    let message = answer["message"].as_str().unwrap();
                    assert!(
                        stderr.contains(message),
                        "{t}:{value}: {stderr} vs {message}"
                    );
                }
                other => panic!("{t}:{value}: {other} {answer}"),
            }
        }
    }
}
