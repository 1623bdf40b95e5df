"""What Twilio sends, turned into typed status events: a StatusCallback's form, an Event
Streams delivery (CloudEvents), a message polled from the REST API."""
