//! The interactive mode: `synodctl` without a command. On a terminal it is a rustyline editor
//! with history in `~/.synodctl_history` and the prompt `host:port> ` (the endpoint that
//! answered last); with stdin from a pipe or file it reads lines silently (no prompt, no
//! history), so scripts and tests can feed it.
//!
//! It accepts the one-shot commands and the vstamp CLI's `GET k`, `SET k v`, `DEL k`, `SIZE`,
//! `QUIT` (see `args::rewrite_alias`); values with spaces are quoted as in a shell.

use crate::args::{Format, REPL_LINE_BYTES_MAX, ReplCommand, parse_repl_line};
use crate::client::Client;
use crate::output;
use rustyline::DefaultEditor;
use rustyline::config::Configurer;
use rustyline::error::ReadlineError;
use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::PathBuf;

/// Most entries kept in the history file.
const HISTORY_ENTRIES_MAX: usize = 1_000;

pub const HELP: &str = "\
Commands (names are case-insensitive; quote values with spaces: SET k \"a b\"):
  put KEY VALUE                 set KEY                               (alias: SET)
  get KEY [RANGE_END] [--prefix] [--limit N] [--keys-only] [--consistency sequential]
      [--rev N] [--sort-by key|version|create|mod|value] [--order asc|desc]
      [--min-mod-revision N] [--max-mod-revision N] [--min-create-revision N] [--max-create-revision N]
                                read KEY, a prefix or [KEY, RANGE_END) (alias: GET)
  del KEY                       delete KEY                            (alias: DEL)
  cas KEY (--expect-version N | --expect-value V | --expect-absent) (--value V | --delete)
                                compare-and-swap
  compact REVISION              drop the history below REVISION
  count [PREFIX]                count keys (SIZE = count of all keys)
  status [--all]                node status
  members                       cluster members (also: member list)
  member add NAME --peer-addr A [--http-addr H] [--grpc-addr G] [--learner]
  member remove|promote ID      ID decimal, or hex with 0x (as etcdctl prints it)
  member update ID [--name N] [--peer-addr A] [--http-addr H] [--grpc-addr G]
  move-leader ID                hand leadership to member ID (asks the leader)
  help                          this message
  quit                          leave (also QUIT, exit, Ctrl-D)
(watch runs until interrupted, so it is a one-shot command: synodctl watch KEY)";

/// What the loop should do after a line.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Continue,
    Quit,
}

/// Runs the REPL to the end. Interactive sessions exit 0; a scripted session (stdin not a
/// terminal) exits with the code of its last failed command, or 0 if all succeeded, so that
/// `synodctl < script` can be checked by a caller.
pub fn run(client: &mut Client, format: Format) -> i32 {
    if std::io::stdin().is_terminal() {
        match DefaultEditor::new() {
            Ok(editor) => return interactive(editor, client, format),
            Err(e) => eprintln!("line editor unavailable ({e}); reading plain lines"),
        }
    }
    scripted(client, format)
}

fn interactive(mut editor: DefaultEditor, client: &mut Client, format: Format) -> i32 {
    let _ = editor.set_max_history_size(HISTORY_ENTRIES_MAX);
    let history = history_path();
    if let Some(path) = &history {
        // A missing file is the normal first run.
        let _ = editor.load_history(path);
    }
    println!("synodctl {} — type help", env!("CARGO_PKG_VERSION"));
    loop {
        let prompt = format!("{}> ", client.current_endpoint());
        match editor.readline(&prompt) {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                }
                let (step, _) = handle_line(&line, client, format);
                if step == Step::Quit {
                    break;
                }
            }
            // Ctrl-C abandons the line being typed, as in a shell.
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                eprintln!("Error: reading input: {e}");
                break;
            }
        }
    }
    if let Some(path) = &history {
        // "If writable": a read-only home is not worth an error message on every exit.
        let _ = editor.save_history(path);
    }
    0
}

fn scripted(client: &mut Client, format: Format) -> i32 {
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut last_failure = 0;
    loop {
        let mut line = String::new();
        // Bounded read: a line longer than the limit is refused without buffering all of it.
        let limit = REPL_LINE_BYTES_MAX as u64 + 1;
        match (&mut input).take(limit).read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                eprintln!("Error: reading input: {e}");
                return 2;
            }
        }
        if !line.ends_with('\n') && line.len() as u64 >= limit {
            eprintln!("Error: line longer than {REPL_LINE_BYTES_MAX} bytes");
            return 2;
        }
        let (step, code) = handle_line(&line, client, format);
        if code != 0 {
            last_failure = code;
        }
        if step == Step::Quit {
            break;
        }
    }
    last_failure
}

/// Parses and runs one line; returns what to do next and the line's exit code.
fn handle_line(line: &str, client: &mut Client, format: Format) -> (Step, i32) {
    let command = match parse_repl_line(line) {
        Ok(None) => return (Step::Continue, 0),
        Ok(Some(c)) => c,
        Err(message) => {
            eprintln!("Error: {message}\n(type help for the commands)");
            return (Step::Continue, 2);
        }
    };
    let mut stdout = std::io::stdout().lock();
    let code = match command {
        ReplCommand::Quit => return (Step::Quit, 0),
        ReplCommand::Help => {
            let _ = writeln!(stdout, "{HELP}");
            0
        }
        // Ctrl-C, the only way to stop a watch, would end the whole session.
        ReplCommand::Kv(crate::args::Command::Watch(_)) => {
            eprintln!("Error: watch runs until interrupted; run it as `synodctl watch ...`");
            2
        }
        ReplCommand::Kv(cmd) => match crate::run_command(client, format, &cmd, &mut stdout) {
            Ok(()) => 0,
            Err(e) => {
                let _ = stdout.flush();
                eprintln!("{}", output::error(&e));
                e.exit_code()
            }
        },
    };
    let _ = stdout.flush();
    (Step::Continue, code)
}

fn history_path() -> Option<PathBuf> {
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    Some(PathBuf::from(home).join(".synodctl_history"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_lists_every_command_and_alias() {
        for word in [
            "put",
            "SET",
            "get",
            "GET",
            "del",
            "DEL",
            "cas",
            "compact",
            "count",
            "SIZE",
            "status",
            "members",
            "member add",
            "help",
            "QUIT",
            "--rev",
            "--sort-by",
            "--order",
        ] {
            assert!(HELP.contains(word), "help misses {word}");
        }
    }
}
