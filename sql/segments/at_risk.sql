-- description: Repeat buyers (two or more orders) with no order in the last 90 days
-- refresh: 1d
-- owner: retention
SELECT profile_id
FROM profiles
WHERE orders >= 2
  AND days_since(last_order_at) > 90
