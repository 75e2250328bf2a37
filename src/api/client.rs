//! A client of the API, for `rivet status --url` and `rivet passthru`.
