"""The HTTP face: the Falcon app, the two webhook resources, signatures. Answers HTTP and
nothing else: what an event does is the ingestor's business."""
