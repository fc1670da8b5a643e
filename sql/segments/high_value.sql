-- description: Customers whose lifetime revenue is 500 or more
-- refresh: 1h
-- owner: growth
SELECT profile_id
FROM profiles
WHERE total_revenue >= 500
