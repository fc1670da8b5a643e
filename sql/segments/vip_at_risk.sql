-- description: High-value customers who are slipping away: win them back first
-- refresh: 1d
-- owner: retention
SELECT profile_id
FROM profiles
WHERE in_segment(profile_id, 'high_value')
  AND in_segment(profile_id, 'at_risk')
