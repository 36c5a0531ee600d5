//! Loads that read straight into existing buffers, and loads that skip what they do not need.
