//! browse (todo)
