-- Features of the purchase-propensity model: what each profile did up to $cutoff.
-- Every column but profile_id is a feature (numbers; NULL counts as 0), so a feature is
-- added by adding a column. The model is trained on the features at earlier cutoffs
-- against whether the profile bought within the following days.
WITH activity AS (
    SELECT profile_id,
           count(*) AS events,
           count(*) FILTER (WHERE timestamp > $cutoff - INTERVAL '30 days') AS events_30d,
           count(*) FILTER (WHERE timestamp > $cutoff - INTERVAL '7 days') AS events_7d,
           count(*) FILTER (WHERE type IN ('page', 'screen')
                              AND timestamp > $cutoff - INTERVAL '30 days') AS views_30d,
           count(*) FILTER (WHERE event = 'Product Added'
                              AND timestamp > $cutoff - INTERVAL '30 days') AS cart_adds_30d,
           count(DISTINCT to_unixtime(timestamp) / 86400) AS active_days,
           to_unixtime($cutoff) / 86400 - min(to_unixtime(timestamp) / 86400) AS tenure_days,
           to_unixtime($cutoff) / 86400 - max(to_unixtime(timestamp) / 86400) AS days_since_last_event
    FROM profile_events
    WHERE profile_id IS NOT NULL AND timestamp <= $cutoff
    GROUP BY profile_id
),
bought AS (
    SELECT profile_id,
           count(*) AS orders,
           count(*) FILTER (WHERE timestamp > $cutoff - INTERVAL '90 days') AS orders_90d,
           coalesce(sum(revenue), 0) AS revenue,
           to_unixtime($cutoff) / 86400 - max(to_unixtime(timestamp) / 86400) AS days_since_last_order
    FROM purchases
    WHERE timestamp <= $cutoff
    GROUP BY profile_id
)
SELECT a.profile_id,
       ln(1 + a.events) AS log_events,
       ln(1 + a.events_30d) AS log_events_30d,
       ln(1 + a.events_7d) AS log_events_7d,
       ln(1 + a.views_30d) AS log_views_30d,
       ln(1 + a.cart_adds_30d) AS log_cart_adds_30d,
       ln(1 + a.active_days) AS log_active_days,
       ln(1 + a.tenure_days) AS log_tenure_days,
       ln(1 + a.days_since_last_event) AS log_days_since_last_event,
       ln(1 + coalesce(b.orders, 0)) AS log_orders,
       ln(1 + coalesce(b.orders_90d, 0)) AS log_orders_90d,
       ln(1 + coalesce(b.revenue, 0)) AS log_revenue,
       CASE WHEN b.orders IS NULL THEN 0 ELSE 1 END AS has_ordered,
       ln(1 + coalesce(b.days_since_last_order, 0)) AS log_days_since_last_order
FROM activity AS a
LEFT JOIN bought AS b ON a.profile_id = b.profile_id
