-- Per-profile purchase summary over the calibration window (purchases up to
-- $calibration_end), as the BG/NBD and Gamma-Gamma models define it:
--   frequency    repeat purchase days (distinct days with a purchase, minus one)
--   recency_days days from the first to the last purchase day
--   age_days     days from the first purchase day to the end of the window (T)
--   monetary     average spend per repeat purchase day with a positive spend
-- `purchases` holds the rows of orders.sql that are purchases (see there).
WITH days AS (
    SELECT profile_id,
           to_unixtime(timestamp) / 86400 AS day,
           count(*) AS orders,
           sum(revenue) AS revenue
    FROM purchases
    WHERE timestamp <= $calibration_end
    GROUP BY profile_id, to_unixtime(timestamp) / 86400
),
numbered AS (
    SELECT *, min(day) OVER (PARTITION BY profile_id) AS first_day FROM days
)
SELECT profile_id,
       count(*) - 1 AS frequency,
       max(day) - min(day) AS recency_days,
       to_unixtime($calibration_end) / 86400 - min(day) AS age_days,
       avg(revenue) FILTER (WHERE day > first_day AND revenue > 0) AS monetary,
       sum(orders) AS orders,
       coalesce(sum(revenue), 0) AS total_revenue,
       to_unixtime($calibration_end) / 86400 - max(day) AS days_since_last_purchase
FROM numbered
GROUP BY profile_id
