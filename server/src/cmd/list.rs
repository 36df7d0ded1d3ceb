//! The list family. (Being written.)

use crate::cmd::CommandSpec;

pub const COMMANDS: &[CommandSpec] = &[];
