-- Orders: count, revenue, average order value, first and last order.
SELECT profile_id,
       count(*) AS orders,
       round(sum(json_get_float(properties, 'revenue')), 2) AS total_revenue,
       round(avg(json_get_float(properties, 'revenue')), 2) AS average_order_value,
       min(timestamp) AS first_order_at,
       max(timestamp) AS last_order_at
FROM profile_events
WHERE profile_id IS NOT NULL AND type = 'track' AND event = 'Order Completed'
GROUP BY profile_id
