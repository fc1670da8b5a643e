//! Builds Arrow record batches of the `events` table from validated events.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Date32Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};

use crate::event::Event;
use crate::schema::events_schema;

/// Accumulates events into the columns of the `events` table.
pub struct EventBatchBuilder {
    source: String,
    message_id: StringBuilder,
    event_type: StringBuilder,
    event: StringBuilder,
    name: StringBuilder,
    user_id: StringBuilder,
    anonymous_id: StringBuilder,
    previous_id: StringBuilder,
    group_id: StringBuilder,
    timestamp: TimestampMicrosecondBuilder,
    sent_at: TimestampMicrosecondBuilder,
    received_at: TimestampMicrosecondBuilder,
    properties: StringBuilder,
    traits: StringBuilder,
    context: StringBuilder,
    integrations: StringBuilder,
    extra: StringBuilder,
    event_date: Date32Builder,
    len: usize,
}

impl EventBatchBuilder {
    /// A builder whose rows all carry `source`.
    pub fn new(source: impl Into<String>, capacity: usize) -> Self {
        let s = || StringBuilder::with_capacity(capacity, capacity * 16);
        let t = || TimestampMicrosecondBuilder::with_capacity(capacity).with_timezone("UTC");
        EventBatchBuilder {
            source: source.into(),
            message_id: s(),
            event_type: s(),
            event: s(),
            name: s(),
            user_id: s(),
            anonymous_id: s(),
            previous_id: s(),
            group_id: s(),
            timestamp: t(),
            sent_at: t(),
            received_at: t(),
            properties: StringBuilder::with_capacity(capacity, capacity * 128),
            traits: s(),
            context: StringBuilder::with_capacity(capacity, capacity * 128),
            integrations: s(),
            extra: s(),
            event_date: Date32Builder::with_capacity(capacity),
            len: 0,
        }
    }

    /// Rows appended since the last [`finish`](Self::finish).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no row was appended since the last [`finish`](Self::finish).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends one event.
    pub fn append(&mut self, e: &Event<'_>) {
        self.message_id.append_value(&e.message_id);
        self.event_type.append_value(e.event_type.as_str());
        self.event.append_option(e.event.as_deref());
        self.name.append_option(e.name.as_deref());
        self.user_id.append_option(e.user_id.as_deref());
        self.anonymous_id.append_option(e.anonymous_id.as_deref());
        self.previous_id.append_option(e.previous_id.as_deref());
        self.group_id.append_option(e.group_id.as_deref());
        self.timestamp.append_value(e.timestamp);
        self.sent_at.append_option(e.sent_at);
        self.received_at.append_value(e.received_at);
        self.properties.append_option(e.properties.as_deref());
        self.traits.append_option(e.traits.as_deref());
        self.context.append_option(e.context.as_deref());
        self.integrations.append_option(e.integrations.as_deref());
        self.extra.append_option(e.extra.as_deref());
        self.event_date.append_value(e.event_date());
        self.len += 1;
    }

    /// Builds the batch and resets the builder.
    pub fn finish(&mut self) -> RecordBatch {
        let len = self.len;
        self.len = 0;
        let mut source = StringBuilder::with_capacity(len, len * self.source.len());
        for _ in 0..len {
            source.append_value(&self.source);
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.message_id.finish()),
            Arc::new(self.event_type.finish()),
            Arc::new(self.event.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.user_id.finish()),
            Arc::new(self.anonymous_id.finish()),
            Arc::new(self.previous_id.finish()),
            Arc::new(self.group_id.finish()),
            Arc::new(self.timestamp.finish()),
            Arc::new(self.sent_at.finish()),
            Arc::new(self.received_at.finish()),
            Arc::new(self.properties.finish()),
            Arc::new(self.traits.finish()),
            Arc::new(self.context.finish()),
            Arc::new(self.integrations.finish()),
            Arc::new(self.extra.finish()),
            Arc::new(source.finish()),
            Arc::new(self.event_date.finish()),
        ];
        // The columns match the schema by construction; a mismatch is a bug here.
        RecordBatch::try_new(events_schema(), columns)
            .unwrap_or_else(|e| panic!("events batch does not match the events schema: {e}"))
    }
}
