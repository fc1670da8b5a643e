-- RFM quintile scores (1 = lowest fifth, 5 = highest) of every profile with a purchase
-- in the calibration window: recency (recent buyers score high), frequency (orders)
-- and monetary value (total spend). Ties share a score. `summary` is summary.sql.
SELECT profile_id,
       ceil(cume_dist() OVER (ORDER BY days_since_last_purchase DESC) * 5 - 1e-9) AS rfm_recency,
       ceil(cume_dist() OVER (ORDER BY orders) * 5 - 1e-9) AS rfm_frequency,
       ceil(cume_dist() OVER (ORDER BY total_revenue) * 5 - 1e-9) AS rfm_monetary
FROM summary
