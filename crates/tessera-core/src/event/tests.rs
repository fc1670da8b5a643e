use super::*;

const NOW: i64 = 1_800_000_000_000_000;

fn import(text: &str) -> Result<Event<'_>, EventError> {
    parse_event(text, &ParseContext::import(NOW))
}

#[test]
fn track_with_every_field() {
    let e = import(
        r#"{"type":"track","messageId":"m1","userId":"u1","anonymousId":"a1","event":"Order Completed",
            "properties":{"revenue":12.5,"items":[1,2]},"context":{"ip":"1.2.3.4"},
            "integrations":{"All":true},"timestamp":"2024-03-01T10:00:00.123456+01:00",
            "channel":"server","_metadata":{"x":1}}"#,
    )
    .unwrap();
    assert_eq!(e.event_type, EventType::Track);
    assert_eq!(e.message_id, "m1");
    assert_eq!(e.event.as_deref(), Some("Order Completed"));
    assert_eq!(
        e.properties.as_deref(),
        Some(r#"{"revenue":12.5,"items":[1,2]}"#)
    );
    assert_eq!(format_timestamp(e.timestamp), "2024-03-01T09:00:00.123456Z");
    assert_eq!(e.received_at, NOW);
    assert_eq!(
        e.extra.as_deref(),
        Some(r#"{"channel":"server","_metadata":{"x":1}}"#)
    );
    assert_eq!(e.event_date(), 19783);
}

#[test]
fn precise_reasons() {
    let cases: &[(&str, &str)] = &[
        (
            r#"{"type":"track","event":"x"}"#,
            "neither \"userId\" nor \"anonymousId\"",
        ),
        (
            r#"{"type":"purchase","userId":"u"}"#,
            "unknown type \"purchase\"",
        ),
        (r#"{"userId":"u"}"#, "missing \"type\""),
        (
            r#"{"type":"track","userId":"u"}"#,
            "track event without \"event\"",
        ),
        (
            r#"{"type":"alias","userId":"u"}"#,
            "alias event without \"previousId\"",
        ),
        (
            r#"{"type":"group","userId":"u"}"#,
            "group event without \"groupId\"",
        ),
        (
            r#"{"type":"page","userId":"u","timestamp":"yesterday"}"#,
            "\"timestamp\" is not an ISO-8601 timestamp",
        ),
        (
            r#"{"type":"page","userId":{"a":1}}"#,
            "\"userId\" must be a string or a number, found an object",
        ),
        (
            r#"{"type":"track","userId":"u","event":"e","properties":[1]}"#,
            "\"properties\" must be an object, found an array",
        ),
        (
            r#"{"type":"track","userId":"u","event":5}"#,
            "\"event\" must be a string, found a number",
        ),
        (r#"{"type":"page","userId":"u""#, "malformed JSON"),
        (r#"[1,2]"#, "must be a JSON object, found an array"),
        (r#"{"type":"page","userId":"u"} trailing"#, "malformed JSON"),
    ];
    for (text, reason) in cases {
        let err = import(text).expect_err(text).to_string();
        assert!(err.contains(reason), "{text}: got {err:?}, want {reason:?}");
    }
}

#[test]
fn snake_case_and_numeric_ids() {
    let e =
        import(r#"{"type":"identify","user_id":42,"message_id":"m","traits":{"email":"A@B.C"}}"#)
            .unwrap();
    assert_eq!(e.user_id.as_deref(), Some("42"));
    assert_eq!(e.message_id, "m");
    assert_eq!(e.traits.as_deref(), Some(r#"{"email":"A@B.C"}"#));
}

#[test]
fn rudder_identify_traits_in_context() {
    let e =
        import(r#"{"type":"identify","userId":"u","context":{"traits":{"plan":"pro"},"ip":"x"}}"#)
            .unwrap();
    assert_eq!(e.traits.as_deref(), Some(r#"{"plan":"pro"}"#));
}

#[test]
fn clock_skew_is_corrected_for_live_traffic() {
    // The client clock is 10 s ahead: sentAt says 12:00:10 when the server sees 12:00:00.
    let received = parse_timestamp("2024-01-01T12:00:00Z").unwrap();
    let sent = parse_timestamp("2024-01-01T12:00:10Z").unwrap();
    let ctx = ParseContext::live(received, Some(sent));
    let e = parse_event(
        r#"{"type":"track","userId":"u","event":"e","timestamp":"2024-01-01T12:00:05Z","receivedAt":"1999-01-01T00:00:00Z"}"#,
        &ctx,
    )
    .unwrap();
    assert_eq!(format_timestamp(e.timestamp), "2024-01-01T11:59:55.000000Z");
    assert_eq!(
        e.received_at, received,
        "live traffic ignores a client receivedAt"
    );
}

#[test]
fn original_timestamp_and_missing_message_id() {
    let text = r#"{"type":"screen","anonymousId":"a","originalTimestamp":"2024-01-02 03:04:05"}"#;
    let e = import(text).unwrap();
    assert_eq!(format_timestamp(e.timestamp), "2024-01-02T03:04:05.000000Z");
    let again = import(text).unwrap();
    assert!(e.message_id.starts_with("gen-"));
    assert_eq!(
        e.message_id, again.message_id,
        "derived ids are deterministic"
    );
}

#[test]
fn batch_defaults_merge_under_the_event() {
    let ctx_default: Box<RawValue> =
        serde_json::from_str(r#"{"library":{"name":"sdk"},"ip":"1"}"#).unwrap();
    let e = parse_event_with(
        r#"{"type":"page","userId":"u","context":{"ip":"2"}}"#,
        &ParseContext::import(NOW),
        BatchDefaults {
            context: Some(&ctx_default),
            integrations: None,
        },
    )
    .unwrap();
    let merged: serde_json::Value = serde_json::from_str(e.context.as_deref().unwrap()).unwrap();
    assert_eq!(merged["ip"], "2");
    assert_eq!(merged["library"]["name"], "sdk");
}

#[test]
fn json_string_properties_are_unwrapped() {
    let e =
        import(r#"{"type":"track","userId":"u","event":"e","properties":"{\"a\":1}"}"#).unwrap();
    assert_eq!(e.properties.as_deref(), Some(r#"{"a":1}"#));
    let err =
        import(r#"{"type":"track","userId":"u","event":"e","properties":"abc"}"#).unwrap_err();
    assert_eq!(err.code(), "wrong_type");
}

#[test]
fn write_key_never_lands() {
    let e = import(r#"{"type":"page","userId":"u","writeKey":"secret"}"#).unwrap();
    assert_eq!(e.extra, None);
}

#[test]
fn timestamp_formats() {
    let want = parse_timestamp("2024-05-06T07:08:09Z").unwrap();
    for s in [
        "2024-05-06T07:08:09.000Z",
        "2024-05-06T09:08:09+02:00",
        "2024-05-06 07:08:09",
        "2024-05-06T07:08:09",
        "2024-05-06 07:08:09+00:00",
    ] {
        assert_eq!(parse_timestamp(s), Some(want), "{s}");
    }
    assert_eq!(
        parse_timestamp("2024-05-06"),
        parse_timestamp("2024-05-06T00:00:00Z")
    );
    assert_eq!(parse_timestamp("not a time"), None);
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any printable user id and event name round-trips through JSON escaping.
        #[test]
        fn strings_round_trip(user in "\\PC{1,40}", name in "\\PC{1,40}") {
            prop_assume!(!user.trim().is_empty());
            let v = serde_json::json!({"type":"track","userId":user,"event":name,"messageId":"m"});
            let text = v.to_string();
            let e = import(&text).unwrap();
            prop_assert_eq!(e.user_id.as_deref(), Some(user.as_str()));
            prop_assert_eq!(e.event.as_deref(), Some(name.as_str()));
        }

        /// Arbitrary bytes never panic the parser.
        #[test]
        fn never_panics(text in "\\PC{0,200}") {
            let _ = import(&text);
        }
    }
}

#[test]
fn times_outside_the_window_are_refused() {
    for (ts, ok) in [
        ("0000-01-01T00:00:00Z", false),
        ("1969-12-31T23:59:59Z", false),
        ("1970-01-01T00:00:00Z", true),
        ("2026-06-01T00:00:00Z", true),
        ("9999-12-31T23:59:59Z", false),
    ] {
        let text = format!(r#"{{"type":"track","userId":"u","event":"e","timestamp":"{ts}"}}"#);
        match import(&text) {
            Ok(_) => assert!(ok, "{ts} accepted"),
            Err(e) => {
                assert!(!ok, "{ts} refused: {e}");
                assert_eq!(e.code(), "timestamp_out_of_range");
                assert!(e.to_string().contains("outside the accepted window"), "{e}");
            }
        }
    }
    // One day ahead of now is the default limit; a wider window takes more.
    let ahead = format_timestamp(NOW + 2 * 86_400_000_000);
    let text = format!(r#"{{"type":"track","userId":"u","event":"e","timestamp":"{ahead}"}}"#);
    assert!(import(&text).is_err());
    let wide = ParseContext::import(NOW).with_window(TimeWindow {
        earliest: i64::MIN,
        max_future: 3 * 86_400_000_000,
    });
    assert!(parse_event(&text, &wide).is_ok());
    // Clock-skew correction first: a device whose clock is 30 years behind is fine.
    let text = r#"{"type":"track","userId":"u","event":"e","timestamp":"1996-01-15T00:00:00Z"}"#;
    let sent = parse_timestamp("1996-01-15T00:00:05Z").unwrap();
    let live = ParseContext::live(NOW, Some(sent));
    let e = parse_event(text, &live).unwrap();
    assert_eq!(e.timestamp, NOW - 5_000_000);
}
