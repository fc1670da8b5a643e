#![allow(clippy::unwrap_used)]

use super::*;

fn meta(value: &str) -> MetadataMap {
    let mut m = MetadataMap::new();
    m.insert("authorization", value.parse().unwrap());
    m
}

fn user(role: Role, pii: bool) -> UserSection {
    UserSection {
        role,
        pii,
        password_hash: tessera_core::auth::hash_password("secret-pass").unwrap(),
        disabled: false,
        rows: None,
    }
}

fn config() -> (
    HashMap<String, UserSection>,
    HashMap<String, TokenSection>,
    String,
) {
    let users = HashMap::from([("ana".to_owned(), user(Role::Analyst, false))]);
    let token = tessera_core::auth::random_token().unwrap();
    let tokens = HashMap::from([(
        "crm".to_owned(),
        TokenSection {
            role: Role::Marketer,
            pii: true,
            sha256: tessera_core::auth::token_digest(&token),
            rows: Some("country = 'DE'".into()),
        },
    )]);
    (users, tokens, token)
}

fn fresh() -> (Auth, String) {
    let (users, tokens, token) = config();
    (Auth::new(users, tokens), token)
}

fn bearer(token: &str) -> MetadataMap {
    meta(&format!("Bearer {token}"))
}

#[test]
fn sign_in_api_tokens_and_refusals() {
    let (auth, api) = fresh();
    assert_eq!(
        auth.login("ana", "wrong", None).unwrap_err().status.code(),
        tonic::Code::Unauthenticated
    );
    assert_eq!(
        auth.login("nobody", "secret-pass", None)
            .unwrap_err()
            .status
            .message(),
        "wrong user or password"
    );
    let login = auth.login("ana", "secret-pass", None).unwrap();
    let p = auth.authenticate(&bearer(&login.token)).unwrap();
    assert_eq!(
        (p.user.as_str(), p.role, p.pii),
        ("ana", Role::Analyst, false)
    );
    let p = auth.authenticate(&bearer(&api)).unwrap();
    assert_eq!(
        (p.user.as_str(), p.role, p.pii, p.rows.as_deref()),
        ("token:crm", Role::Marketer, true, Some("country = 'DE'"))
    );
    assert!(!p.access().audit_log, "only admins read the audit log");
    for bad in ["Bearer forged", "Basic YW5hOnNlY3JldA==", "Bearer "] {
        let e = auth.authenticate(&meta(bad)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "{bad}");
    }
    let e = auth.authenticate(&MetadataMap::new()).unwrap_err();
    assert!(e.message().contains("no credentials"), "{e}");
    auth.expire_all();
    let e = auth.authenticate(&bearer(&login.token)).unwrap_err();
    assert!(e.message().contains("expired"), "{e}");
    // API tokens do not expire.
    assert!(auth.authenticate(&bearer(&api)).is_ok());
}

#[test]
fn disabled_users_and_revoked_tokens_are_refused_on_their_next_call() {
    let (mut users, tokens, api) = config();
    let auth = Auth::new(users.clone(), tokens.clone());
    let login = auth.login("ana", "secret-pass", None).unwrap();
    assert!(auth.authenticate(&bearer(&login.token)).is_ok());

    // A new grant applies to the live session.
    users.get_mut("ana").unwrap().pii = true;
    auth.reload(users.clone(), tokens.clone());
    assert!(auth.authenticate(&bearer(&login.token)).unwrap().pii);

    // Disabled: the session ends, and signing in again says why.
    users.get_mut("ana").unwrap().disabled = true;
    auth.reload(users.clone(), tokens);
    let e = auth.authenticate(&bearer(&login.token)).unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    let e = auth.login("ana", "secret-pass", None).unwrap_err();
    assert!(e.status.message().contains("disabled"), "{:?}", e.status);
    // The wrong password of a disabled user says nothing about the account.
    let e = auth.login("ana", "wrong-pass", None).unwrap_err();
    assert_eq!(e.status.message(), "wrong user or password");

    // Revoked: the token is gone from tessera.toml.
    assert!(auth.authenticate(&bearer(&api)).is_ok());
    auth.reload(users, HashMap::new());
    let e = auth.authenticate(&bearer(&api)).unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
}

#[test]
fn repeated_failures_are_slowed_down_per_user_and_per_address() {
    let (auth, _) = fresh();
    let from: IpAddr = "192.0.2.7".parse().unwrap();
    for _ in 0..FREE_FAILURES {
        let e = auth.login("ana", "guess", Some(from)).unwrap_err();
        assert_eq!(e.audit, "unauthenticated");
    }
    // Now even the right password waits: the guesser learns nothing.
    let e = auth.login("ana", "secret-pass", Some(from)).unwrap_err();
    assert_eq!(
        (e.status.code(), e.audit),
        (tonic::Code::ResourceExhausted, "throttled")
    );
    assert!(
        e.status.message().contains("try again in 1 s"),
        "{}",
        e.status.message()
    );
    // Another user from elsewhere is not affected.
    let mut users = HashMap::from([("ana".to_owned(), user(Role::Analyst, false))]);
    users.insert("bob".into(), user(Role::Admin, true));
    auth.reload(users, HashMap::new());
    assert!(auth.login("bob", "secret-pass", None).is_ok());
    // Once the delay has passed, the right password works and clears the count.
    auth.age_failures(Duration::from_secs(2));
    assert!(auth.login("ana", "secret-pass", Some(from)).is_ok());
    assert!(
        auth.login("ana", "guess", Some(from)).unwrap_err().audit == "unauthenticated",
        "the count restarted"
    );

    // One address guessing many users is slowed down too.
    let (auth, _) = fresh();
    for i in 0..FREE_FAILURES_PER_ADDRESS {
        let e = auth
            .login(&format!("user{i}"), "guess", Some(from))
            .unwrap_err();
        assert_eq!(e.audit, "unauthenticated", "attempt {i}");
    }
    let e = auth.login("ana", "secret-pass", Some(from)).unwrap_err();
    assert_eq!(e.audit, "throttled");
    assert!(
        auth.login("ana", "secret-pass", None).is_ok(),
        "from elsewhere"
    );
    // The delay doubles with each further failure, up to the maximum.
    let f = Failures {
        count: FREE_FAILURES + 3,
        last: Instant::now(),
    };
    assert_eq!(f.delay(FREE_FAILURES), Duration::from_secs(8));
    let f = Failures {
        count: 100,
        last: Instant::now(),
    };
    assert_eq!(f.delay(FREE_FAILURES), MAX_DELAY);
}
