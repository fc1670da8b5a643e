-- Devices and logins: an event carrying both an anonymous_id (a browser, an app
-- install, a POS receipt) and a user_id says they are the same person. Every event
-- also declares the identifiers it carries, so a visitor who never logs in still
-- gets a profile of their own.
--
-- A rule returns a_type, a_value, b_type, b_value, seen_at and optionally source.
-- A row with one side NULL only declares the other side.
SELECT 'anonymous_id' AS a_type, anonymous_id AS a_value,
       'user_id'      AS b_type, user_id      AS b_value,
       timestamp AS seen_at, source
FROM events
WHERE anonymous_id IS NOT NULL OR user_id IS NOT NULL
