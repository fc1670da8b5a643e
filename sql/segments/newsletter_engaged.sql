-- description: Clicked a newsletter e-mail in the last 30 days
-- refresh: 1h
-- owner: crm
SELECT profile_id
FROM profile_events
WHERE profile_id IS NOT NULL
  AND type = 'track'
  AND event = 'Email Clicked'
  AND within_days(timestamp, 30)
GROUP BY profile_id
