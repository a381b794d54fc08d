//! Layer tests (written by a helper).
