-- The product category a person engages with most (views, cart adds, orders).
SELECT profile_id, category AS top_category
FROM (
    SELECT profile_id, category,
           row_number() OVER (PARTITION BY profile_id ORDER BY n DESC, category) AS rank
    FROM (
        SELECT profile_id, json_get_str(properties, 'category') AS category, count(*) AS n
        FROM profile_events
        WHERE profile_id IS NOT NULL
          AND type = 'track'
          AND event IN ('Product Viewed', 'Product Added', 'Order Completed')
          AND json_get_str(properties, 'category') IS NOT NULL
        GROUP BY 1, 2
    ) AS counts
) AS ranked
WHERE rank = 1
