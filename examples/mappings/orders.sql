-- Maps a shop's order export (orders.csv) to Segment `Order Completed` events.
-- The input file is the table `input`; output columns are named after event fields.
-- Rows without an e-mail have no user id and are reported as rejected, with their line.
SELECT
    order_id                              AS message_id,
    'track'                               AS type,
    'Order Completed'                     AS event,
    normalize_email(email)                AS user_id,
    ordered_at                            AS timestamp,
    named_struct('order_id', order_id,
                 'revenue', total,
                 'currency', currency)    AS properties
FROM input
