//! Sans-IO HTTP/1.1: request parsing (httparse), body framing, connection state, response heads.
