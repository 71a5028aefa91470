//! Runnable examples of embedding AI-CD; see the `examples` targets.
