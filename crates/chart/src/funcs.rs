//! Helm's template functions and the sprig functions charts use.
