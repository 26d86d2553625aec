//! Sans-IO SIP core: framing, RFC 3261/6026 transactions, dialogs, user agent and RFC 3264 offer/answer.
