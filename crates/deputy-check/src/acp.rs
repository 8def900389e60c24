//! The battery for the ACP face (PROTOCOL.md §8).

use crate::runner::Runner;

pub(crate) fn run(_r: &mut Runner) {}
