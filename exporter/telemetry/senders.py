"""Who sent a message, as the `sender` label of `twilio_sender_message_status_total`.

The sender is the messaging service the message went through, else its `From` address: the
business's own number, short code, alphanumeric sender ID or channel address, never the
recipient's. Only values shaped like one of those become label values; anything else (a
buggy or hostile value) is `other`, so a label is always short and plain. Which senders get a
label value of their own, and which share `other`, is decided by the cap in `Metrics`.
"""

from __future__ import annotations

import re

from exporter.model import FINAL_STATUSES, OTHER, MessageState

# The final statuses of an outbound message. `received` ends an inbound message, whose `From`
# is the person who wrote in: counting it per sender would put customers' numbers in labels.
SENDER_STATUSES = FINAL_STATUSES - {"received"}

_E164 = r"\+[1-9][0-9]{1,14}"
SENDER_SHAPE = re.compile(
    r"MG[0-9a-fA-F]{32}"  # a messaging service SID
    rf"|{_E164}"  # a phone number
    r"|[0-9]{3,8}"  # a short code
    r"|(?=[0-9 ]*[A-Za-z])[A-Za-z0-9 ]{1,11}"  # an alphanumeric sender ID: 11 at most, a letter
    rf"|(?:whatsapp|messenger|rcs):(?:{_E164}|[A-Za-z0-9_.-]{{1,64}})"  # a channel address
)


def sender_value(message: MessageState) -> str:
    """The message's messaging service SID, else its `From`; "" when it has neither, `other`
    when the value has no sender's shape. Not yet capped: see `Metrics`."""
    sender = (message.messaging_service_sid or "").strip() or (message.from_ or "").strip()
    if not sender:
        return ""
    return sender if SENDER_SHAPE.fullmatch(sender) else OTHER
