//! Sans-IO media core: RTP/RTCP, G.711, DTMF (RFC 4733, SIP INFO, in-band), jitter buffer, prompts.
