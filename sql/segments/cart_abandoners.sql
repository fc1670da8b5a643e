-- description: Added a product to the cart in the last 7 days and has not ordered since
-- refresh: 15m
-- owner: lifecycle
SELECT profile_id
FROM profile_events
WHERE profile_id IS NOT NULL
  AND type = 'track'
  AND event IN ('Product Added', 'Order Completed')
GROUP BY profile_id
HAVING max(CASE WHEN event = 'Product Added' AND within_days(timestamp, 7) THEN timestamp END) IS NOT NULL
   AND coalesce(max(CASE WHEN event = 'Order Completed' THEN timestamp END)
                < max(CASE WHEN event = 'Product Added' THEN timestamp END), true)
