-- Activity: how much each person does and through which channels (sources).
SELECT profile_id,
       count(*) AS event_count,
       sum(CASE WHEN type IN ('page', 'screen') THEN 1 ELSE 0 END) AS views,
       count(DISTINCT event_date) AS active_days,
       array_sort(array_agg(DISTINCT source)) AS channels
FROM profile_events
WHERE profile_id IS NOT NULL
GROUP BY profile_id
