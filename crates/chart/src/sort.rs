//! Helm's install order by kind.
