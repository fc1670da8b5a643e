-- description: Customers who spent over 500 and are now more likely gone than not (BG/NBD p_alive < 0.5)
-- refresh: 1d
-- owner: retention
SELECT s.profile_id
FROM profile_scores AS s
JOIN profiles AS p ON p.profile_id = s.profile_id
WHERE s.p_alive < 0.5
  AND p.total_revenue > 500
