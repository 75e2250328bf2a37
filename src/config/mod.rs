//! Declaration files: their shapes (`raw`), reading them with spans (`load`),
//! what in them is a secret and their text with every secret blanked
//! (`secret`), a forgiving tokenizer for text that may not parse (`lex`),
//! and the JSON schemas generated from the shapes (`schema`).

pub mod lex;
pub mod load;
pub mod raw;
pub mod schema;
pub mod secret;
pub mod spanned;
