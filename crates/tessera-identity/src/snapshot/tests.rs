#![allow(clippy::unwrap_used)]

use super::*;

fn map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => unreachable!("an object"),
    }
}

fn jane() -> Profile {
    Profile {
        profile_id: "p_1".into(),
        email: Some("jane@example.com".into()),
        identifiers: vec![
            ProfileIdentifier {
                id_type: "email".into(),
                value: "jane@example.com".into(),
                first_seen: None,
                last_seen: None,
            },
            ProfileIdentifier {
                id_type: "user_id".into(),
                value: "u1".into(),
                first_seen: None,
                last_seen: None,
            },
        ],
        traits: map(serde_json::json!({
            "Email": "jane@example.com",
            "first-name": "Jane",
            "plan": "pro",
            "phone": null,
            "contacts": [{"ip": "10.0.0.1", "kind": "home"}],
        })),
        computed: map(serde_json::json!({"last_name": "Doe", "orders": 3})),
        merges: vec![Merge {
            from_profile_id: "p_0".into(),
            into_profile_id: "p_1".into(),
            merged_at: 1,
            rule: Some("10_devices".into()),
            a_type: Some("email".into()),
            a_value: Some("jane@example.com".into()),
            b_type: Some("anonymous_id".into()),
            b_value: Some("laptop-1".into()),
        }],
        ..Profile::default()
    }
}

#[test]
fn masking_reaches_every_depth_and_spares_the_rest() {
    let profile = jane();
    let m = profile.masked();
    assert_eq!(m.identifiers[0].value, MASK);
    assert_eq!(m.identifiers[1].value, "u1");
    assert_eq!(m.email.as_deref(), Some(MASK));
    assert_eq!(m.traits["Email"], MASK);
    assert_eq!(m.traits["first-name"], MASK);
    assert_eq!(m.traits["plan"], "pro");
    assert!(m.traits["phone"].is_null(), "null stays null");
    assert_eq!(m.traits["contacts"][0]["ip"], MASK);
    assert_eq!(m.traits["contacts"][0]["kind"], "home");
    assert_eq!(m.computed["last_name"], MASK);
    assert_eq!(m.computed["orders"], 3);
    assert_eq!(m.merges[0].a_value.as_deref(), Some(MASK));
    assert_eq!(m.merges[0].b_value.as_deref(), Some("laptop-1"));
    assert_eq!(
        profile.identifiers[0].value, "jane@example.com",
        "the snapshot's copy is untouched"
    );
    assert!(matches!(
        profile.as_seen(true),
        std::borrow::Cow::Borrowed(_)
    ));
}

#[test]
fn one_resolver_for_every_front_door() {
    let mut kid = Profile {
        profile_id: "p_2".into(),
        ..Profile::default()
    };
    kid.identifiers.push(ProfileIdentifier {
        id_type: "user_id".into(),
        value: "u2".into(),
        first_seen: None,
        last_seen: None,
    });
    let mut s = Snapshot::of_profiles(vec![jane(), kid]);
    s.merged.insert("p_0".into(), 0);

    let r = s.resolve(" Email ", "  Jane@Example.COM ").unwrap();
    assert_eq!(
        (r.id_type.as_str(), r.value.as_str(), r.profile),
        ("email", "jane@example.com", Some(0)),
        "normalized as stitching normalizes"
    );
    for alias in ["profile_id", "profile", "PROFILE"] {
        let r = s.resolve(alias, " p_2 ").unwrap();
        assert_eq!(
            (r.id_type.as_str(), r.profile),
            ("profile_id", Some(1)),
            "{alias}"
        );
    }
    let r = s.resolve("profile_id", "p_0").unwrap();
    assert_eq!(
        (r.profile, r.merged_from.as_deref()),
        (Some(0), Some("p_0")),
        "a merged-away id leads to its survivor"
    );
    assert_eq!(s.resolve("profile_id", "p_9").unwrap().profile, None);
    assert_eq!(s.resolve("user_id", "nobody").unwrap().profile, None);
    let e = s.resolve("shoe_size", "42").unwrap_err().to_string();
    assert_eq!(
        e,
        "unknown identifier type \"shoe_size\": known types are profile_id, email, user_id"
    );
    let e = s
        .resolve("email", "not an address")
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a valid email"), "{e}");
    let e = s.resolve("", "x").unwrap_err().to_string();
    assert!(e.contains("needs a type and a value"), "{e}");
    assert_eq!(s.profile_of("p_0"), Some(0));
    assert_eq!(s.profile_of("p_2"), Some(1));
}

#[test]
fn row_filters_admit_only_their_profiles() {
    let mut s = Snapshot::of_profiles(vec![jane(), Profile::default()]);
    let filter: Arc<str> = Arc::from("city = 'Leeds'");
    s.admitted.insert(filter.clone(), vec![true, false]);
    assert!(s.visible(0, None) && s.visible(1, None));
    assert!(s.visible(0, Some(&filter)) && !s.visible(1, Some(&filter)));
    assert!(
        !s.visible(0, Some("another filter")),
        "unknown filters admit none"
    );
}

#[test]
fn computed_trait_cells_become_json() {
    use datafusion::arrow::array::ListArray;
    use datafusion::arrow::datatypes::Int32Type;
    assert_eq!(json_of(&ScalarValue::Int64(Some(3))), 3);
    assert_eq!(json_of(&ScalarValue::Utf8(None)), Value::Null);
    assert_eq!(
        json_of(&ScalarValue::TimestampMicrosecond(Some(1_500_000), None)),
        "1970-01-01T00:00:01.500Z"
    );
    let list = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![Some(vec![Some(1), None])]);
    assert_eq!(
        json_of(&ScalarValue::List(Arc::new(list))),
        serde_json::json!([1, null])
    );
}
