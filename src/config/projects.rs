//! Per-project settings: the built-in system prompts and the optional TOML file that overrides or adds to them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use mqtt_llm_protocol::topics::{ControlAction, ProjectName, ReplyPolicy, control_notice_topic, hint_notice_topic};
use serde::Deserialize;

use super::error::{ConfigError, Problem};
use super::raw::RawSessionOwner;
use crate::session::OwnerMode;

/// The project whose prompt applies to any project without one of its own.
pub const GENERAL: &str = "general";

/// Built-in prompts, written for mqtt-llm. They keep what the existing clients parse: `driving` replies end with
/// the state tags `<Cont or EOS><PlayerOp:x><AgentOP:y>`; `maze` replies are a JSON object with `hint` and the
/// optional action keys the maze clients act on (seed-protocol §3: `path`, `break_wall`, `show_path`, ...), and its
/// user turns are mostly game states in the successor's form (`crates/protocol/src/wire/state.rs`).
/// `prompt_portal` is the project the prompt-portal and OwOGPT backends publish on; the successor
/// server (`llama3/llamacpp_mqtt_deploy.py`, its `SYSTEM_PROMPTS`, seed-protocol §5) gave it a prompt that follows
/// the user's template and the format it asks for, which those backends' users test their templates against.
const BUILTIN: &[(&str, &str)] = &[
    (
        GENERAL,
        "You are a helpful AI assistant. Give clear, concise and accurate answers.",
    ),
    (
        "maze",
        "You are the guide in a maze game. Each game state you receive is JSON: player_pos and exit_pos as [x, y], \
         visible_map as rows indexed visible_map[y][x] (1 = floor, 0 = wall), germs (enemies to avoid) and oxygen \
         (pellets to collect) as lists of [x, y], and oxygen_collected. Give one short, practical hint that moves the \
         player toward the exit safely. Always respond with a single JSON object and nothing else, with the key \
         \"hint\" (string) and, only when useful, \"path\" (a list of [x, y] floor cells from the player toward \
         the exit), \"show_path\" (boolean), \"break_wall\" ([x, y] of one wall next to the path) and \
         \"highlight_zone\" (a list of [x, y] cells to point out). A question instead of a state gets the same \
         JSON form, with the answer in \"hint\".",
    ),
    (
        "driving",
        "You are Cap, a friendly and slightly goofy classmate who is learning physics together with the player in a \
         driving game. Talk like a peer, in under 50 words. Never give the answer away; ask a question or share a \
         hunch instead. Always end your reply with the state tags <Cont or EOS><PlayerOp:x><AgentOP:y> exactly as \
         written: <Cont> while the discussion should go on or <EOS> when it is finished, then the player's current \
         option in place of x and your own in place of y.",
    ),
    (
        "bloodcell",
        "You are a junior-high student learning about blood cells alongside the player. Answer in under 20 words, \
         in a casual Gen-Z voice. You are a fellow learner: share guesses, never lecture and never correct the player.",
    ),
    (
        "racing",
        "You are a classmate thinking through the physics of a racing game (force, mass, acceleration) with the \
         player. Be concise and curious, reason together, and never reveal the answer outright.",
    ),
    (
        PROMPT_PORTAL,
        "You are an assistant for testing and refining prompt templates. Follow the user's prompt template: its \
         instructions, style and tone, so that its effect on your answers shows. When it asks for a specific format \
         (JSON or any other), reply in exactly that format and nothing else. Be clear and concise.",
    ),
];

/// The prompt-portal / OwOGPT project (built in; subscribed only when `--projects` names it).
pub const PROMPT_PORTAL: &str = "prompt_portal";
/// Projects that take game states on `{p}/state` unless their `state_topic = false` (seed-protocol §1.3: the
/// successor did so for `maze` only).
const BUILTIN_STATE_PROJECTS: &[&str] = &["maze"];

/// Why `user` ownership is refused: the one sentence `up` exits with.
const USER_OWNER_UNAVAILABLE: &str = "`user` needs mqtt-llm's embedded broker, which does not exist yet (an \
     external broker does not tell mqtt-llm who published a request): use `client` with broker ACLs instead (see the \
     README's Security section)";

/// A session ownership setting (`--session-owner`, a project's `session_owner`) as the request path runs it.
pub(super) fn owner_mode(raw: RawSessionOwner) -> Result<OwnerMode, &'static str> {
    match raw {
        RawSessionOwner::None => Ok(OwnerMode::None),
        RawSessionOwner::Client => Ok(OwnerMode::Client),
        RawSessionOwner::User => Err(USER_OWNER_UNAVAILABLE),
    }
}

/// The system prompt (and optional scheduling priority, reply prefixes and session ownership) of every known
/// project. Unknown projects use `general`'s prompt and priority; reply prefixes and ownership are never inherited
/// (a project without `session_owner` follows `--session-owner`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectCatalog {
    prompts: BTreeMap<String, String>,
    /// vLLM request priorities (lower is served first); none built in.
    priorities: BTreeMap<String, i32>,
    /// Extra topic prefixes a project's MQTT 5 Response Topic may use; none built in.
    reply_policies: BTreeMap<String, ReplyPolicy>,
    /// Projects whose `session_owner` overrides `--session-owner`.
    session_owners: BTreeMap<String, OwnerMode>,
    /// Projects that take game states on `{p}/state` (answered on `{p}/hint/...`); `maze` built in.
    state_projects: BTreeSet<String>,
    /// `--session-owner`: every other project's.
    default_session_owner: OwnerMode,
    /// Projects whose `control_topics` restricts the control actions; every other project allows all three.
    control_actions: BTreeMap<String, Vec<ControlAction>>,
}

/// The policy of a project without `reply_prefixes`: only `{p}/assistant_response/...`.
static NO_EXTRA_PREFIXES: ReplyPolicy = ReplyPolicy::none();

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    projects: BTreeMap<String, RawProject>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProject {
    system_prompt: Option<String>,
    /// vLLM's request priority: lower is served first, ties by arrival.
    priority: Option<i32>,
    /// Extra topic prefixes the project's MQTT 5 Response Topic may use.
    reply_prefixes: Option<Vec<String>>,
    /// Overrides `--session-owner` for this project.
    session_owner: Option<RawSessionOwner>,
    /// Whether the project takes game states on `{p}/state` (`true` built in for `maze`; `false` turns it off).
    state_topic: Option<bool>,
    /// `false`: no control topics; `true` (the default): all; a list: only those actions.
    control_topics: Option<RawControlTopics>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawControlTopics {
    All(bool),
    Only(Vec<String>),
}

/// A project's `control_topics` as the actions it allows.
fn control_actions(raw: RawControlTopics) -> Result<Vec<ControlAction>, &'static str> {
    match raw {
        RawControlTopics::All(true) => Ok(ControlAction::ALL.to_vec()),
        RawControlTopics::All(false) => Ok(Vec::new()),
        RawControlTopics::Only(names) => names
            .iter()
            .map(|n| {
                ControlAction::parse(n)
                    .ok_or("each entry must be \"template\", \"clear_history\" or \"delete_session\"")
            })
            .collect(),
    }
}

impl Default for ProjectCatalog {
    fn default() -> Self {
        Self::builtin()
    }
}

impl ProjectCatalog {
    /// The built-in prompts only.
    pub fn builtin() -> Self {
        let prompts = BUILTIN
            .iter()
            .map(|(name, prompt)| ((*name).to_owned(), (*prompt).to_owned()))
            .collect();
        Self {
            prompts,
            priorities: BTreeMap::new(),
            reply_policies: BTreeMap::new(),
            session_owners: BTreeMap::new(),
            state_projects: BUILTIN_STATE_PROJECTS.iter().map(|p| (*p).to_owned()).collect(),
            default_session_owner: OwnerMode::None,
            control_actions: BTreeMap::new(),
        }
    }

    /// The built-in prompts, overridden and extended by a TOML document (see `deploy/mqtt-llm.toml`).
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        let raw: RawFile = toml::from_str(text).map_err(|source| ConfigError::FileSyntax {
            path: origin.to_owned(),
            source: Box::new(source),
        })?;
        let mut catalog = Self::builtin();
        for (name, project) in raw.projects {
            if let Some(prompt) = project.system_prompt {
                let prompt = prompt.trim();
                if prompt.is_empty() {
                    return Err(ConfigError::Project {
                        project: name,
                        key: "system_prompt",
                        problem: Problem::Empty,
                    });
                }
                catalog.prompts.insert(name.clone(), prompt.to_owned());
            }
            match project.state_topic {
                Some(true) => {
                    catalog.state_projects.insert(name.clone());
                }
                Some(false) => {
                    catalog.state_projects.remove(&name);
                }
                None => {}
            }
            if let Some(priority) = project.priority {
                catalog.priorities.insert(name.clone(), priority);
            }
            if let Some(owner) = project.session_owner {
                let mode = owner_mode(owner).map_err(|rule| ConfigError::Project {
                    project: name.clone(),
                    key: "session_owner",
                    problem: rule.into(),
                })?;
                catalog.session_owners.insert(name.clone(), mode);
            }
            if let Some(raw) = project.control_topics {
                let actions = control_actions(raw).map_err(|rule| ConfigError::Project {
                    project: name.clone(),
                    key: "control_topics",
                    problem: rule.into(),
                })?;
                catalog.control_actions.insert(name.clone(), actions);
            }
            if let Some(prefixes) = project.reply_prefixes {
                let policy = ReplyPolicy::new(&prefixes).map_err(|e| ConfigError::Project {
                    project: name.clone(),
                    key: "reply_prefixes",
                    problem: e.into(),
                })?;
                catalog.reply_policies.insert(name, policy);
            }
        }
        Ok(catalog)
    }

    /// Load [`Self::from_toml`] from a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::FileRead {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// The project's system prompt, else `general`'s.
    pub fn system_prompt(&self, project: &str) -> &str {
        self.prompts
            .get(project)
            .or_else(|| self.prompts.get(GENERAL))
            .map(String::as_str)
            .unwrap_or_default()
    }

    /// The project's vLLM request priority (lower is served first), else `general`'s, else none (vLLM's 0).
    pub fn priority(&self, project: &str) -> Option<i32> {
        self.priorities
            .get(project)
            .or_else(|| self.priorities.get(GENERAL))
            .copied()
    }

    /// Where the project's MQTT 5 Response Topic may point besides `{p}/assistant_response/...`: its own
    /// `reply_prefixes`, never `general`'s (a prefix opens a publish target, so it is granted per project only).
    pub fn reply_policy(&self, project: &str) -> &ReplyPolicy {
        self.reply_policies.get(project).unwrap_or(&NO_EXTRA_PREFIXES)
    }

    /// The catalog with `mode` (`--session-owner`) for every project without its own `session_owner`.
    pub fn with_default_session_owner(mut self, mode: OwnerMode) -> Self {
        self.default_session_owner = mode;
        self
    }

    /// How the project's sessions are owned: its own `session_owner`, else `--session-owner` (never `general`'s).
    pub fn session_owner(&self, project: &str) -> OwnerMode {
        self.session_owners
            .get(project)
            .copied()
            .unwrap_or(self.default_session_owner)
    }

    /// Whether the project takes game states on `{p}/state` (its own `state_topic`, never `general`'s).
    pub fn has_state_topic(&self, project: &str) -> bool {
        self.state_projects.contains(project)
    }

    /// The state projects among `served` (the `--projects` list), in its order.
    pub fn state_projects(&self, served: &[ProjectName]) -> Vec<ProjectName> {
        served
            .iter()
            .filter(|p| self.has_state_topic(p.as_str()))
            .cloned()
            .collect()
    }

    /// Whether the project serves the control topic of `action`: its own `control_topics`, else all (never
    /// `general`'s: a project's control topics are opened or closed per project).
    pub fn control_allowed(&self, project: &str, action: ControlAction) -> bool {
        self.control_actions
            .get(project)
            .is_none_or(|allowed| allowed.contains(&action))
    }

    /// Where the control notices about `suffix` (a session id, or `all`) of `project` go: `maze/hint/{sid}` for
    /// the maze game (as the successor did; its clients listen there), else `{p}/control_notice/{sid}`. Never
    /// under `{p}/assistant_response/`, where clients take any message as the answer to a pending request.
    pub fn notice_topic(&self, project: &ProjectName, suffix: &str) -> String {
        if self.has_state_topic(project.as_str()) {
            hint_notice_topic(project, suffix)
        } else {
            control_notice_topic(project, suffix)
        }
    }

    /// Whether any project has a priority, so that the engine must run with `--scheduling-policy priority`.
    pub fn uses_priorities(&self) -> bool {
        !self.priorities.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_projects_use_general() {
        let c = ProjectCatalog::builtin();
        assert_eq!(c.system_prompt("nope"), c.system_prompt(GENERAL));
        assert!(
            c.system_prompt("driving")
                .contains("<Cont or EOS><PlayerOp:x><AgentOP:y>")
        );
        assert!(c.system_prompt("maze").contains("\"hint\""));
    }

    #[test]
    fn prompt_portal_is_built_in_and_follows_the_users_template() {
        let c = ProjectCatalog::builtin();
        let prompt = c.system_prompt(PROMPT_PORTAL);
        assert_ne!(prompt, c.system_prompt(GENERAL));
        assert!(
            prompt.contains("prompt template") && prompt.contains("format"),
            "{prompt}"
        );
    }

    #[test]
    fn toml_overrides_and_adds() {
        let c = ProjectCatalog::from_toml(
            "[projects.general]\nsystem_prompt = \"Be brief.\"\n[projects.quiz]\nsystem_prompt = \"Ask.\"\n",
            Path::new("x.toml"),
        )
        .unwrap();
        assert_eq!(c.system_prompt("general"), "Be brief.");
        assert_eq!(c.system_prompt("quiz"), "Ask.");
        assert_eq!(c.system_prompt("other"), "Be brief.");
        assert!(c.system_prompt("maze").contains("JSON"));
    }

    #[test]
    fn toml_errors_name_the_field() {
        let err = ProjectCatalog::from_toml("[projects.a]\nprompt = 1\n", Path::new("x.toml")).unwrap_err();
        assert!(err.to_string().contains("x.toml"), "{err}");
        let err = ProjectCatalog::from_toml("[projects.a]\nsystem_prompt = \" \"\n", Path::new("x.toml")).unwrap_err();
        assert!(err.to_string().contains("projects.a.system_prompt"), "{err}");
    }

    #[test]
    fn priorities_are_optional_and_fall_back_to_general() {
        let c = ProjectCatalog::builtin();
        assert!(!c.uses_priorities());
        assert_eq!(c.priority("maze"), None);
        let c = ProjectCatalog::from_toml(
            "[projects.maze]\npriority = -5\n[projects.general]\npriority = 10\n[projects.quiz]\nsystem_prompt = \"Ask.\"\n",
            Path::new("x.toml"),
        )
        .unwrap();
        assert!(c.uses_priorities());
        assert_eq!(c.priority("maze"), Some(-5));
        assert_eq!(c.priority("quiz"), Some(10));
        assert!(
            c.system_prompt("maze").contains("JSON"),
            "a priority alone keeps the built-in prompt"
        );
        let err = ProjectCatalog::from_toml("[projects.a]\npriority = \"high\"\n", Path::new("x.toml")).unwrap_err();
        assert!(err.to_string().contains("priority"), "{err}");
    }

    #[test]
    fn reply_prefixes_are_per_project_and_validated() {
        let c = ProjectCatalog::builtin();
        assert!(c.reply_policy("general").extra_prefixes().is_empty());
        let c = ProjectCatalog::from_toml(
            "[projects.general]\nreply_prefixes = [\"devices\", \"acme/replies/\"]\n[projects.maze]\npriority = 1\n",
            Path::new("x.toml"),
        )
        .unwrap();
        assert_eq!(
            c.reply_policy("general").extra_prefixes(),
            ["devices/", "acme/replies/"]
        );
        assert!(
            c.reply_policy("maze").extra_prefixes().is_empty(),
            "not inherited from general"
        );
        assert!(c.reply_policy("quiz").extra_prefixes().is_empty());
        assert!(
            c.system_prompt("general").contains("helpful"),
            "prefixes alone keep the prompt"
        );
        for (bad, what) in [
            ("[\"\"]", "empty"),
            ("[\"a/+/\"]", "'+'"),
            ("[\"devices/#\"]", "'#'"),
            ("[\"$SYS/\"]", "'$'"),
            ("\"devices/\"", "x.toml"),
            ("[1]", "x.toml"),
        ] {
            let text = format!("[projects.door]\nreply_prefixes = {bad}\n");
            let err = ProjectCatalog::from_toml(&text, Path::new("x.toml")).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(what), "{bad}: {msg}");
            if what != "x.toml" {
                assert!(msg.contains("projects.door.reply_prefixes"), "{bad}: {msg}");
            }
        }
    }

    #[test]
    fn session_owner_is_per_project_over_the_flag_and_user_is_refused() {
        let c = ProjectCatalog::builtin();
        assert_eq!(c.session_owner("general"), OwnerMode::None);
        let text = "[projects.maze]\nsession_owner = \"client\"\n[projects.general]\nsession_owner = \"none\"\n";
        let c = ProjectCatalog::from_toml(text, Path::new("x.toml")).unwrap();
        assert_eq!(c.session_owner("maze"), OwnerMode::Client);
        assert_eq!(c.session_owner("quiz"), OwnerMode::None);
        let c = c.with_default_session_owner(OwnerMode::Client);
        assert_eq!(
            c.session_owner("general"),
            OwnerMode::None,
            "the project's own setting wins"
        );
        assert_eq!(c.session_owner("quiz"), OwnerMode::Client, "not inherited from general");
        assert!(
            c.system_prompt("maze").contains("JSON"),
            "ownership alone keeps the prompt"
        );
        let err =
            ProjectCatalog::from_toml("[projects.a]\nsession_owner = \"user\"\n", Path::new("x.toml")).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("projects.a.session_owner") && msg.contains("embedded broker"),
            "{msg}"
        );
        let err = ProjectCatalog::from_toml("[projects.a]\nsession_owner = \"me\"\n", Path::new("x.toml")).unwrap_err();
        assert!(err.to_string().contains("client"), "{err}");
    }

    #[test]
    fn maze_is_a_built_in_state_project_and_state_topic_is_per_project() {
        let names = |list: &[&str]| {
            list.iter()
                .map(|n| ProjectName::try_new(n).unwrap())
                .collect::<Vec<_>>()
        };
        let served = names(&["general", "maze", "quiz"]);
        let c = ProjectCatalog::builtin();
        assert!(c.has_state_topic("maze"));
        assert!(!c.has_state_topic("general"));
        assert_eq!(c.state_projects(&served), names(&["maze"]));
        assert_eq!(c.state_projects(&names(&["general"])), vec![], "only served projects");
        let text = "[projects.maze]\nstate_topic = false\n[projects.quiz]\nstate_topic = true\n";
        let c = ProjectCatalog::from_toml(text, Path::new("x.toml")).unwrap();
        assert_eq!(c.state_projects(&served), names(&["quiz"]));
        assert!(c.system_prompt("maze").contains("\"hint\""), "the prompt stays");
        let text = "[projects.general]\nstate_topic = true\n";
        let c = ProjectCatalog::from_toml(text, Path::new("x.toml")).unwrap();
        assert!(!c.has_state_topic("quiz"), "never inherited from general");
        let err = ProjectCatalog::from_toml("[projects.a]\nstate_topic = \"yes\"\n", Path::new("x.toml")).unwrap_err();
        assert!(err.to_string().contains("state_topic"), "{err}");
    }

    #[test]
    fn control_topics_are_restricted_per_project() {
        let text = "[projects.general]\ncontrol_topics = false\n[projects.quiz]\ncontrol_topics = [\"clear_history\"]\n\
                    [projects.open]\ncontrol_topics = true\n";
        let c = ProjectCatalog::from_toml(text, Path::new("x.toml")).unwrap();
        for action in ControlAction::ALL {
            assert!(!c.control_allowed("general", action));
            assert!(c.control_allowed("open", action));
            assert!(c.control_allowed("maze", action), "not inherited from general");
        }
        assert!(c.control_allowed("quiz", ControlAction::ClearHistory));
        assert!(!c.control_allowed("quiz", ControlAction::Template));
        assert!(!c.control_allowed("quiz", ControlAction::DeleteSession));
        for bad in ["[\"reset\"]", "\"yes\"", "1"] {
            let text = format!("[projects.a]\ncontrol_topics = {bad}\n");
            let err = ProjectCatalog::from_toml(&text, Path::new("x.toml")).unwrap_err();
            assert!(
                err.to_string().contains("x.toml") || err.to_string().contains("control_topics"),
                "{bad}: {err}"
            );
        }
        let err =
            ProjectCatalog::from_toml("[projects.a]\ncontrol_topics = [\"reset\"]\n", Path::new("x.toml")).unwrap_err();
        assert!(err.to_string().contains("projects.a.control_topics"), "{err}");
    }

    #[test]
    fn notices_go_to_maze_hint_or_the_control_notice_topic() {
        let c = ProjectCatalog::builtin();
        let p = |s: &str| ProjectName::try_new(s).unwrap();
        assert_eq!(c.notice_topic(&p("maze"), "s1"), "maze/hint/s1");
        assert_eq!(
            c.notice_topic(&p("prompt_portal"), "s1"),
            "prompt_portal/control_notice/s1"
        );
        assert_eq!(c.notice_topic(&p("general"), "all"), "general/control_notice/all");
    }

    #[test]
    fn shipped_example_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/mqtt-llm.toml");
        let c = ProjectCatalog::load(&path).unwrap();
        assert!(
            c.system_prompt("driving")
                .contains("<Cont or EOS><PlayerOp:x><AgentOP:y>")
        );
    }
}
