-- alias(previousId → userId): the earlier identity (here read as the device id an
-- app used before login) belongs to the user.
SELECT 'anonymous_id' AS a_type, previous_id AS a_value,
       'user_id' AS b_type, user_id AS b_value,
       timestamp AS seen_at, source
FROM events
WHERE type = 'alias' AND previous_id IS NOT NULL AND user_id IS NOT NULL
