//! The README as the unit tests read it: the user's manual lists configuration keys, filter
//! fields and the Lua API, and tests hold those lists to the code. One reader of its tables
//! serves them all.

/// The README's text.
pub const TEXT: &str = include_str!("../README.md");

/// The cells (trimmed, without the outer `|`) of each body row of the first table after
/// `intro`.
pub fn table_after(intro: &str) -> Vec<Vec<&'static str>> {
    let after = TEXT.split(intro).nth(1).unwrap_or_else(|| panic!("the README has {intro:?}"));
    let rows = after.lines().skip_while(|l| !l.starts_with('|')).take_while(|l| l.starts_with('|')).skip(2);
    rows.map(|row| row.trim_matches('|').split('|').map(str::trim).collect()).collect()
}

/// The words in backticks of a piece of README text.
pub fn backticked(text: &str) -> impl Iterator<Item = &str> {
    text.split('`').skip(1).step_by(2)
}
