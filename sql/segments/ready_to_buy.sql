-- description: Profiles with at least a 30% chance of ordering in the next 30 days (purchase propensity)
-- refresh: 1d
-- owner: growth
SELECT profile_id
FROM profile_scores
WHERE purchase_propensity >= 0.3
