-- Order events, one row each: who, when and for how much. Every predictive model reads
-- its purchases from here. $order_event and $revenue_property come from [predict] in
-- tessera.toml. Rows with a negative revenue (refunds, corrections) are not purchases;
-- a missing or zero revenue is a purchase that does not count towards spend.
SELECT profile_id,
       timestamp,
       json_get_float(properties, $revenue_property) AS revenue
FROM profile_events
WHERE type = 'track' AND event = $order_event
