//! Declaration files: their shapes (`raw`), reading them with spans (`load`),
//! and the JSON schemas generated from the shapes (`schema`).

pub mod lex;
pub mod load;
pub mod raw;
pub mod schema;
pub mod secret;
pub mod spanned;
