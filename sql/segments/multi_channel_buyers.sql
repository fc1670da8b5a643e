-- description: Ordered through at least two channels (web, app, in store)
-- refresh: 1h
-- owner: growth
SELECT profile_id
FROM profile_events
WHERE profile_id IS NOT NULL
  AND type = 'track'
  AND event = 'Order Completed'
GROUP BY profile_id
HAVING count(DISTINCT source) >= 2
