"""The write path. A webhook request is verified, appended to the store's inbox and answered
(`Intake`); one ingester per deployment applies the inbox in batches (`Ingester`): decode,
deduplicate, advance the lifecycle, count, queue spans. `Outcomes` is the one place that
counts what became of each request and event, at the door and when applied."""
