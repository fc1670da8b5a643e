-- Contact points from identify calls: the e-mail and phone a person gives are linked
-- to their user_id (or to the device, for an identify without user_id). Values are
-- normalized: e-mails trimmed and lower-cased, phones in E.164 (national numbers are
-- read as US numbers here: change 'US' to your main market).
SELECT CASE WHEN user_id IS NOT NULL THEN 'user_id' ELSE 'anonymous_id' END AS a_type,
       coalesce(user_id, anonymous_id) AS a_value,
       'email' AS b_type,
       normalize_email(json_as_text(traits, 'email')) AS b_value,
       timestamp AS seen_at, source
FROM events
WHERE type = 'identify' AND traits IS NOT NULL
UNION ALL
SELECT CASE WHEN user_id IS NOT NULL THEN 'user_id' ELSE 'anonymous_id' END,
       coalesce(user_id, anonymous_id),
       'phone',
       normalize_phone(json_as_text(traits, 'phone'), 'US'),
       timestamp, source
FROM events
WHERE type = 'identify' AND traits IS NOT NULL
