//! `mqtt-llm chat`: an interactive (or scripted, one message per stdin line) client of the wire protocol.
//! Replies go to stdout (streamed deltas as they arrive); the per-turn summary and errors go to stderr.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use tokio::io::{AsyncBufReadExt, BufReader};

use mqtt_llm_client::link::LinkStatus;
use mqtt_llm_client::{Client, Exchange, LinkWatch, Outcome, RequestSpec, Session};
use mqtt_llm_protocol::topics::SessionId;
use mqtt_llm_protocol::wire::StreamFrame;

use crate::cli::ChatArgs;

/// What one input line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Line<'a> {
    Empty,
    Quit,
    Reset,
    System(&'a str),
    Session(&'a str),
    Unknown(&'a str),
    Message(&'a str),
}

fn parse_line(line: &str) -> Line<'_> {
    let line = line.trim();
    let (cmd, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let rest = rest.trim();
    match cmd {
        "" => Line::Empty,
        "/quit" | "/exit" => Line::Quit,
        "/reset" => Line::Reset,
        "/system" => Line::System(rest),
        "/session" if !rest.is_empty() => Line::Session(rest),
        c if c.starts_with('/') => Line::Unknown(c),
        _ => Line::Message(line),
    }
}

fn new_session_id() -> String {
    format!("chat-{:08x}", rand::random::<u32>())
}

pub async fn run(args: &ChatArgs) -> ExitCode {
    let config = args.broker.client_config("mqtt-llm-chat");
    let client = match Client::connect(&config).await {
        Ok(c) => c,
        Err(e) => return fail(&e.to_string()),
    };
    let code = converse(&client, args).await;
    client.shutdown().await;
    code
}

async fn converse(client: &Client, args: &ChatArgs) -> ExitCode {
    let stream = !args.no_stream;
    let mut system = args.system.clone();
    let mut session = match open(client, args, args.session.clone().unwrap_or_else(new_session_id)).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let interactive = std::io::stdin().is_terminal();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut link = LinkNotes::new(client.link_watch());
    loop {
        if interactive {
            prompt(&session.session);
        }
        // Between turns, say when the broker connection is lost and when it is back (requests made meanwhile
        // wait for it, within --timeout).
        let line = loop {
            tokio::select! {
                line = lines.next_line() => break line,
                Some(status) = link.watch.changed() => link.note(&status),
            }
        };
        let line = match line {
            Ok(Some(line)) => line,
            Ok(None) => return ExitCode::SUCCESS,
            Err(e) => return fail(&format!("reading stdin: {e}")),
        };
        match parse_line(&line) {
            Line::Empty => {}
            Line::Quit => return ExitCode::SUCCESS,
            Line::Reset | Line::Session(_) => {
                let id = match parse_line(&line) {
                    Line::Session(id) => id.to_owned(),
                    _ => new_session_id(),
                };
                if let Err(e) = SessionId::try_new(&id) {
                    note(&format!("not a session id: {e}"));
                    continue;
                }
                session.close();
                session = match open(client, args, id).await {
                    Ok(s) => s,
                    Err(code) => return code,
                };
                note(&format!("session {}", session.session));
            }
            Line::System(text) => {
                system = (!text.is_empty()).then(|| text.to_owned());
                note("system prompt set");
            }
            Line::Unknown(cmd) => note(&format!(
                "unknown command {cmd} (/reset, /system TEXT, /session ID, /quit)"
            )),
            Line::Message(text) => {
                let spec = RequestSpec {
                    message: text.to_owned(),
                    stream,
                    temperature: args.sampling.temperature,
                    max_tokens: args.sampling.max_tokens,
                    system_prompt: system.clone(),
                };
                let ex = match session.request(&spec, args.timeout, print_delta).await {
                    Ok(ex) => ex,
                    Err(e) => return fail(&e.to_string()),
                };
                turn_done(&ex, stream);
                match &ex.outcome {
                    Outcome::Ok => {}
                    Outcome::Timeout => return fail(&format!("no reply within {:?}", args.timeout)),
                    Outcome::Error { .. } if args.fail_on_error => return ExitCode::FAILURE,
                    Outcome::Error { .. } => {}
                }
            }
        }
    }
}

/// Notes on stderr about the broker connection: once when it is lost, once when it is back.
struct LinkNotes {
    watch: LinkWatch,
    /// A loss was reported and the return not yet.
    lost: bool,
    /// The connection (ConnAck count) last known to be up.
    up: u64,
}

impl LinkNotes {
    fn new(watch: LinkWatch) -> Self {
        Self {
            watch,
            lost: false,
            up: 1,
        }
    }

    fn note(&mut self, status: &LinkStatus) {
        match status {
            LinkStatus::Down { error } if !self.lost => {
                self.lost = true;
                note(&format!("connection to the broker lost ({error}); reconnecting"));
            }
            LinkStatus::Up { connection } if self.lost || *connection != self.up => {
                (self.lost, self.up) = (false, *connection);
                note("reconnected to the broker");
            }
            LinkStatus::Down { .. } | LinkStatus::Up { .. } | LinkStatus::Connecting => {}
        }
    }
}

async fn open(client: &Client, args: &ChatArgs, id: String) -> Result<Session, ExitCode> {
    client
        .open_session(&args.project, &id)
        .await
        .map_err(|e| fail(&e.to_string()))
}

// ---- printing (the only place `chat` prints) ----

fn prompt(session: &str) {
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "[{session}]> ");
    let _ = err.flush();
}

fn note(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

fn fail(text: &str) -> ExitCode {
    let _ = writeln!(std::io::stderr().lock(), "error: {text}");
    ExitCode::FAILURE
}

fn print_delta(frame: &StreamFrame) {
    if let StreamFrame::Delta(d) = frame {
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "{}", d.delta);
        let _ = out.flush();
    }
}

/// End a turn: the reply (when it was not streamed), then the summary line on stderr.
fn turn_done(ex: &Exchange, streamed: bool) {
    let mut out = std::io::stdout().lock();
    let deltas = ex.frames.iter().any(|(_, f)| matches!(f, StreamFrame::Delta(_)));
    if streamed && deltas {
        let _ = writeln!(out);
    } else if let Some(reply) = &ex.reply {
        let _ = writeln!(out, "{reply}");
    }
    let _ = out.flush();
    let _ = writeln!(std::io::stderr().lock(), "{}", summary(ex));
}

fn summary(ex: &Exchange) -> String {
    let mut parts = Vec::new();
    if let Some(ttft) = ex.ttft {
        parts.push(format!("ttft {} ms", ttft.as_millis()));
    }
    if let Some(e2e) = ex.e2e {
        parts.push(format!("total {} ms", e2e.as_millis()));
    }
    let done = ex.frames.iter().find_map(|(_, f)| match f {
        StreamFrame::Done(d) => Some(d),
        _ => None,
    });
    if let Some(d) = done {
        let secs = d.total_ms as f64 / 1000.0;
        let rate = if secs > 0.0 {
            d.usage.completion_tokens as f64 / secs
        } else {
            0.0
        };
        parts.push(format!("{} tokens, {rate:.1} tok/s", d.usage.completion_tokens));
    }
    match &ex.outcome {
        Outcome::Ok => {}
        Outcome::Error { code, .. } => parts.push(format!("error {code}")),
        Outcome::Timeout => parts.push("timeout".into()),
    }
    for v in &ex.violations {
        parts.push(format!("protocol violation: {v}"));
    }
    format!("[{}]", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_into_commands() {
        assert_eq!(parse_line("  "), Line::Empty);
        assert_eq!(parse_line("/quit"), Line::Quit);
        assert_eq!(parse_line("/reset"), Line::Reset);
        assert_eq!(parse_line("/system  be brief "), Line::System("be brief"));
        assert_eq!(parse_line("/session abc"), Line::Session("abc"));
        assert_eq!(parse_line("/session"), Line::Unknown("/session"));
        assert_eq!(parse_line(" hello there "), Line::Message("hello there"));
    }
}
