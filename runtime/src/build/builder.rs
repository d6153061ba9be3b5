//! The steps of a build: the Dockerfile's stages up to the target, in order, each
//! instruction an image (content-addressed layers shared with pulled ones, a history entry
//! as Docker's legacy builder writes it), looked up in the cache first.

mod copy;
mod text;

use super::cache::Cache;
use super::containers::{self, RunSpec};
use super::context::Context;
use super::words::{pairs, word, words, Vars};
use super::{BuildError, BuildEvent, BuildOptions};
use crate::container::ContainerStore;
use crate::image::digest::Digest;
use crate::image::{Image, ImageError, ImageStore};
use crate::root::StateRoot;
use parse_dockerfile::{self as pd, Command, Instruction};
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;
use text::{argv, healthcheck, keyword_start, text_at};

/// Build arguments Docker accepts without an ARG declaring them.
const PREDEFINED_ARGS: [&str; 8] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
];

/// Builds the image `opts` describe from `ctx`; its ID (`sha256:...`).
pub fn build(
    root: &StateRoot,
    ctx: &Context,
    opts: &BuildOptions,
    on: &mut dyn FnMut(BuildEvent),
) -> Result<String, BuildError> {
    let text = match &opts.dockerfile_text {
        Some(t) => t.clone(),
        None => {
            let name = opts.dockerfile.as_deref().unwrap_or("Dockerfile");
            ctx.read_small(name)?.ok_or_else(|| {
                BuildError::Dockerfile(format!("Cannot locate specified Dockerfile: {name}"))
            })?
        }
    };
    let text = String::from_utf8(text)
        .map_err(|_| BuildError::Dockerfile("the Dockerfile is not UTF-8 text".into()))?;
    let file = pd::parse(&text).map_err(|e| BuildError::Parse {
        line: e.line(),
        column: e.column(),
        message: format!("{e:#}"),
    })?;
    let stages: Vec<pd::Stage> = file.stages().collect();
    let last = match &opts.target {
        None => stages.len() - 1,
        Some(t) => stages
            .iter()
            .position(|s| stage_name(s).is_some_and(|n| n.eq_ignore_ascii_case(t)))
            .ok_or_else(|| BuildError::NoTarget(t.clone()))?,
    };
    let mut b = Builder {
        text: &text,
        store: ImageStore::new(root),
        containers: ContainerStore::new(root),
        cache: Cache::new(root),
        ctx,
        opts,
        on,
        used: BTreeSet::new(),
        built: Vec::new(),
        index: 0,
        total: stages[..=last]
            .iter()
            .map(|s| 1 + s.instructions.len())
            .sum::<usize>()
            + usize::from(!opts.labels.is_empty()),
        global: Vars::new(),
        cache_sources: cache_sources(&ImageStore::new(root), &opts.cache_from)?,
    };
    for arg in file.global_args() {
        for (name, default) in b.declared(&arg.arguments.value, &Vars::new())? {
            if let Some(v) = b.arg_value(&name, default) {
                b.global.insert(name, v);
            }
        }
    }
    let mut result = None;
    for stage in &stages[..=last] {
        let mut st = b.from(stage)?;
        for instruction in stage.instructions {
            b.instruction(&mut st, instruction, &text)?;
        }
        b.built.push((stage_name(stage), st.image.clone()));
        result = Some(st);
    }
    let mut st = result.expect("a Dockerfile has a stage at least");
    if !opts.labels.is_empty() {
        let text = opts
            .labels
            .iter()
            .map(|(k, v)| format!("{k:?}={v:?}"))
            .collect::<Vec<_>>()
            .join(" ");
        b.announce(format!("LABEL {text}"));
        let mut config = st.config.clone();
        let labels = config.entry("Labels").or_insert_with(|| json!({}));
        if !labels.is_object() {
            *labels = json!({});
        }
        for (k, v) in &opts.labels {
            labels[k] = json!(v);
        }
        b.metadata(&mut st, format!("LABEL {text}"), config)?;
    }
    let unused: Vec<&String> = opts
        .build_args
        .keys()
        .filter(|k| !b.used.contains(*k) && !PREDEFINED_ARGS.contains(&k.as_str()))
        .collect();
    if !unused.is_empty() {
        let names = unused.iter().map(|s| s.as_str()).collect::<Vec<_>>();
        (b.on)(BuildEvent::Warning(format!(
            "One or more build-args [{}] were not consumed",
            names.join(" ")
        )));
    }
    for tag in &opts.tags {
        crate::image::remove::tag(&b.store, &st.image.id, &tag.full())?;
    }
    Ok(st.image.id)
}

fn stage_name(stage: &pd::Stage) -> Option<String> {
    stage.from.as_.as_ref().map(|(_, n)| n.value.to_string())
}

/// One stage's state: its image so far and what the next steps see.
struct StageState {
    image: Image,
    /// The image's container config (Docker's names).
    config: Map<String, Value>,
    /// The stage's ARGs with values.
    args: Vars,
    shell: Vec<String>,
    /// Whether CMD was set in this stage (ENTRYPOINT clears an inherited one).
    cmd_set: bool,
}

impl StageState {
    /// The variables arguments expand from: ARGs, then ENV over them.
    fn vars(&self) -> Vars {
        let mut vars = self.args.clone();
        for e in env_list(&self.config) {
            if let Some((k, v)) = e.split_once('=') {
                vars.insert(k.to_string(), v.to_string());
            }
        }
        vars
    }

    fn workdir(&self) -> String {
        match self.config.get("WorkingDir").and_then(Value::as_str) {
            Some(w) if !w.is_empty() => w.to_string(),
            _ => "/".into(),
        }
    }
}

fn env_list(config: &Map<String, Value>) -> Vec<String> {
    config
        .get("Env")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

struct Builder<'a> {
    text: &'a str,
    store: ImageStore,
    containers: ContainerStore,
    cache: Cache,
    ctx: &'a Context,
    opts: &'a BuildOptions,
    on: &'a mut dyn FnMut(BuildEvent),
    /// Build arguments some ARG declared.
    used: BTreeSet<String>,
    /// The stages built so far: name, final image.
    built: Vec<(Option<String>, Image)>,
    index: usize,
    total: usize,
    /// ARGs declared before the first FROM.
    global: Vars,
    /// With `--cache-from`: the images a cached step may be (see [`cache_sources`]).
    cache_sources: Option<BTreeSet<String>>,
}

/// The images `--cache-from` names and all their ancestors, or None without the flag.
/// Docker's legacy builder takes a cached step then only if its image is one of these;
/// a name that resolves to nothing is skipped, as Docker skips it.
fn cache_sources(
    store: &ImageStore,
    cache_from: &[String],
) -> Result<Option<BTreeSet<String>>, BuildError> {
    if cache_from.is_empty() {
        return Ok(None);
    }
    let parents: std::collections::BTreeMap<String, String> = store
        .images()?
        .into_iter()
        .filter_map(|i| Some((i.id, i.parent?)))
        .collect();
    let mut sources = BTreeSet::new();
    for name in cache_from {
        let Ok(image) = store.resolve(name) else {
            continue;
        };
        let mut next = Some(image.id);
        // `insert` is false on an image already met: a parent loop ends the walk.
        while let Some(id) = next.filter(|id| sources.insert(id.clone())) {
            next = parents.get(&id).cloned();
        }
    }
    Ok(Some(sources))
}

impl Builder<'_> {
    fn announce(&mut self, text: String) {
        self.index += 1;
        (self.on)(BuildEvent::Step {
            index: self.index,
            total: self.total,
            text,
        });
    }

    /// `NAME[=default]` declarations, defaults expanded.
    fn declared(
        &self,
        text: &str,
        vars: &Vars,
    ) -> Result<Vec<(String, Option<String>)>, BuildError> {
        Ok(words(text, vars)?
            .into_iter()
            .map(|w| match w.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None => (w, None),
            })
            .collect())
    }

    /// A declared ARG's value: `--build-arg`, else its default.
    fn arg_value(&mut self, name: &str, default: Option<String>) -> Option<String> {
        match self.opts.build_args.get(name) {
            Some(v) => {
                self.used.insert(name.to_string());
                Some(v.clone())
            }
            None => default,
        }
    }

    /// FROM: the stage's base.
    fn from(&mut self, stage: &pd::Stage) -> Result<StageState, BuildError> {
        let from = stage.from;
        let text = text_at(self.text, from.from.span.start);
        self.announce(text.clone());
        for flag in &from.options {
            if flag.name.value != "platform" {
                return Err(step_error(
                    &text,
                    format!("unknown flag --{}", flag.name.value),
                ));
            }
        }
        let name = word(&from.image.value, &self.global)?;
        let image = if name.eq_ignore_ascii_case("scratch") {
            self.scratch()?
        } else if let Some(built) = self.stage_image(&name) {
            built
        } else {
            match self.store.resolve(&name) {
                Ok(_) if self.opts.pull => self.pull(&text, &name)?,
                Ok(image) => image,
                Err(ImageError::NotFound(_)) => self.pull(&text, &name)?,
                Err(e) => return Err(e.into()),
            }
        };
        let mut config = self.config_of(&image)?;
        // The base's ONBUILD triggers run now, as part of this FROM; the new image does
        // not pass them on.
        let triggers: Vec<String> = match config.remove("OnBuild") {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|t| t.as_str().map(String::from))
                .collect(),
            _ => Vec::new(),
        };
        let shell = config
            .get("Shell")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .filter(|s: &Vec<String>| !s.is_empty())
            .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]);
        (self.on)(BuildEvent::Image(image.id.clone()));
        let mut st = StageState {
            image,
            config,
            args: Vars::new(),
            shell,
            cmd_set: false,
        };
        self.run_triggers(&mut st, &triggers)
            .map_err(|e| step_error(&text, format!("ONBUILD trigger: {e}")))?;
        Ok(st)
    }

    /// The base image's ONBUILD triggers, each read as a one-instruction Dockerfile.
    fn run_triggers(&mut self, st: &mut StageState, triggers: &[String]) -> Result<(), BuildError> {
        self.total += triggers.len();
        for trigger in triggers {
            let source = format!("FROM scratch\n{trigger}\n");
            let file = pd::parse(&source).map_err(|e| BuildError::Parse {
                line: e.line().saturating_sub(1),
                column: e.column(),
                message: format!("{e:#}"),
            })?;
            let stage = file.stages().next().expect("FROM scratch is a stage");
            for ins in stage.instructions {
                if matches!(ins, Instruction::Onbuild(_) | Instruction::Maintainer(_)) {
                    return Err(step_error(
                        trigger,
                        "not allowed as an ONBUILD trigger".into(),
                    ));
                }
                self.instruction(st, ins, &source)?;
            }
        }
        Ok(())
    }

    /// FROM an image this store does not have: pulled, as Docker's build does.
    fn pull(&mut self, text: &str, name: &str) -> Result<Image, BuildError> {
        struct Quiet;
        impl crate::image::pull::PullProgress for Quiet {
            fn layer(&self, _: &str, _: crate::image::pull::LayerEvent) {}
        }
        let reference = crate::image::Reference::parse(name)?;
        (self.on)(BuildEvent::Pulling(reference.familiar()));
        let settings = crate::image::registry::settings(self.store.root(), Vec::new())
            .map_err(|e| step_error(text, e.to_string()))?;
        let platform = crate::image::manifest::Platform::host();
        let pulled =
            crate::image::pull::pull(&self.store, &reference, &platform, &settings, &Quiet)
                .map_err(|source| BuildError::Pull {
                    step: text.to_string(),
                    source,
                })?;
        Ok(self.store.resolve(&pulled.id)?)
    }

    /// The image of an earlier stage named (or numbered) `name`.
    fn stage_image(&self, name: &str) -> Option<Image> {
        if let Ok(i) = name.parse::<usize>() {
            return self.built.get(i).map(|(_, img)| img.clone());
        }
        self.built
            .iter()
            .find(|(n, _)| n.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(name)))
            .map(|(_, img)| img.clone())
    }

    /// The empty image `FROM scratch` starts from: no layer, an empty config (always the
    /// same document, so always the same ID).
    fn scratch(&self) -> Result<Image, BuildError> {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        let config = json!({
            "architecture": arch, "os": "linux", "config": {},
            "rootfs": {"type": "layers", "diff_ids": []},
        });
        let config = serde_json::to_vec(&config).expect("JSON values serialise");
        let config_id = self.store.put_blob(&config)?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_id.as_str(), "size": config.len(),
            },
            "layers": [],
        });
        let manifest = serde_json::to_vec(&manifest).expect("JSON values serialise");
        let manifest_id = self.store.put_blob(&manifest)?;
        self.store.add_image(&manifest_id, &config_id, None, None)?;
        Ok(self.store.resolve(config_id.as_str())?)
    }

    /// The container config of `image`, as its config blob has it.
    fn config_of(&self, image: &Image) -> Result<Map<String, Value>, BuildError> {
        let corrupt = |reason: String| ImageError::Corrupt {
            image: image.id.clone(),
            what: "config",
            reason,
        };
        let digest = Digest::parse(&image.id).map_err(|e| corrupt(e.to_string()))?;
        let doc: Value = serde_json::from_slice(&self.store.read_blob(&digest)?)
            .map_err(|e| corrupt(e.to_string()))?;
        Ok(match doc.get("config") {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        })
    }

    /// A step: its image from the cache under `key_parts` (with the parent's ID), or
    /// made by `make` and recorded.
    fn step(
        &mut self,
        st: &mut StageState,
        key_parts: &[&str],
        make: impl FnOnce(&mut Self, &StageState) -> Result<String, BuildError>,
    ) -> Result<(), BuildError> {
        // The config the step starts from is the parent image's, except right after ONBUILD
        // triggers were taken out of it.
        let config = serde_json::to_string(&st.config).expect("JSON values serialise");
        let mut parts = vec![st.image.id.as_str(), config.as_str()];
        parts.extend_from_slice(key_parts);
        let key = Cache::key(&parts);
        let cached = match self.opts.no_cache {
            true => None,
            false => self
                .cache
                .get(&key)
                .filter(|id| self.cache_sources.as_ref().is_none_or(|s| s.contains(id)))
                .and_then(|id| self.store.resolve(&id).ok()),
        };
        let image = match cached {
            Some(image) => {
                (self.on)(BuildEvent::Cached);
                image
            }
            None => {
                let id = make(self, st)?;
                let known: BTreeSet<String> =
                    self.store.images()?.into_iter().map(|i| i.id).collect();
                self.cache
                    .put(&key, &id, |id| known.contains(id))
                    .map_err(BuildError::Cache)?;
                self.store.resolve(&id)?
            }
        };
        st.config = self.config_of(&image)?;
        (self.on)(BuildEvent::Image(image.id.clone()));
        st.image = image;
        Ok(())
    }

    /// A step that changes only the config: `config` becomes the image's.
    fn metadata(
        &mut self,
        st: &mut StageState,
        text: String,
        config: Map<String, Value>,
    ) -> Result<(), BuildError> {
        let created_by = format!("/bin/sh -c #(nop)  {text}");
        let config_text = serde_json::to_string(&config).expect("JSON values serialise");
        self.step(st, &["meta", &created_by, &config_text], |b, st| {
            let none: Option<std::fs::File> = None;
            Ok(crate::image::commit::commit_step(
                &b.store,
                &st.image,
                none,
                &config,
                &created_by,
            )?)
        })
    }

    /// One instruction of `source` (the Dockerfile, or an ONBUILD trigger's text).
    fn instruction(
        &mut self,
        st: &mut StageState,
        ins: &Instruction,
        source: &str,
    ) -> Result<(), BuildError> {
        let text = text_at(source, keyword_start(ins));
        self.announce(text.clone());
        let vars = st.vars();
        let mut config = st.config.clone();
        match ins {
            Instruction::Arg(arg) => {
                for (name, default) in self.declared(&arg.arguments.value, &vars)? {
                    let value = self
                        .arg_value(&name, default)
                        .or_else(|| self.global.get(&name).cloned());
                    match value {
                        Some(v) => st.args.insert(name, v),
                        None => st.args.remove(&name),
                    };
                }
                self.metadata(st, text, config)
            }
            Instruction::Env(env) => {
                let mut list = env_list(&config);
                for (k, v) in pairs(&env.arguments.value, &vars)? {
                    list.retain(|e| e.split_once('=').map_or(e.as_str(), |(n, _)| n) != k);
                    list.push(format!("{k}={v}"));
                }
                config.insert("Env".into(), json!(list));
                self.metadata(st, text, config)
            }
            Instruction::Label(label) => {
                let labels = object(&mut config, "Labels");
                for (k, v) in pairs(&label.arguments.value, &vars)? {
                    labels.insert(k, json!(v));
                }
                self.metadata(st, text, config)
            }
            Instruction::Cmd(cmd) => {
                config.insert("Cmd".into(), json!(argv(&st.shell, &cmd.arguments)));
                st.cmd_set = true;
                self.metadata(st, text, config)
            }
            Instruction::Entrypoint(e) => {
                config.insert("Entrypoint".into(), json!(argv(&st.shell, &e.arguments)));
                if !st.cmd_set {
                    config.insert("Cmd".into(), Value::Null);
                }
                self.metadata(st, text, config)
            }
            Instruction::Workdir(w) => {
                let dir = word(&w.arguments.value, &vars)?;
                let dir = match dir.starts_with('/') {
                    true => dir,
                    false => format!("{}/{dir}", st.workdir()),
                };
                config.insert(
                    "WorkingDir".into(),
                    json!(format!("/{}", super::ignore::clean(&dir))),
                );
                self.metadata(st, text, config)
            }
            Instruction::User(u) => {
                config.insert("User".into(), json!(word(&u.arguments.value, &vars)?));
                self.metadata(st, text, config)
            }
            Instruction::Expose(e) => {
                let ports = object(&mut config, "ExposedPorts");
                for arg in &e.arguments {
                    for p in words(&arg.value, &vars)? {
                        let p = if p.contains('/') {
                            p
                        } else {
                            format!("{p}/tcp")
                        };
                        ports.insert(p, json!({}));
                    }
                }
                self.metadata(st, text, config)
            }
            Instruction::Volume(v) => {
                let paths: Vec<String> = match &v.arguments {
                    pd::JsonOrStringArray::Json(a) => {
                        a.value.iter().map(|s| s.value.to_string()).collect()
                    }
                    pd::JsonOrStringArray::String(a) => {
                        let mut out = Vec::new();
                        for s in a {
                            out.extend(words(&s.value, &vars)?);
                        }
                        out
                    }
                };
                let volumes = object(&mut config, "Volumes");
                for p in paths {
                    volumes.insert(p, json!({}));
                }
                self.metadata(st, text, config)
            }
            Instruction::Stopsignal(s) => {
                config.insert("StopSignal".into(), json!(word(&s.arguments.value, &vars)?));
                self.metadata(st, text, config)
            }
            Instruction::Shell(s) => {
                let shell: Vec<String> = s.arguments.iter().map(|a| a.value.to_string()).collect();
                config.insert("Shell".into(), json!(shell));
                st.shell = shell;
                self.metadata(st, text, config)
            }
            Instruction::Healthcheck(h) => {
                config.insert("Healthcheck".into(), healthcheck(&text, &st.shell, h)?);
                self.metadata(st, text, config)
            }
            Instruction::Onbuild(o) => {
                let trigger = text_at(source, o.onbuild.span.end);
                let list = config.entry("OnBuild").or_insert_with(|| json!([]));
                match list {
                    Value::Array(a) => a.push(json!(trigger)),
                    other => *other = json!([trigger]),
                }
                self.metadata(st, text, config)
            }
            Instruction::Maintainer(_) => self.metadata(st, text, config),
            Instruction::Run(run) => self.run(st, &text, run),
            Instruction::Copy(c) => self.copy(st, &text, false, &c.options, &c.src, &c.dest),
            Instruction::Add(a) => self.copy(st, &text, true, &a.options, &a.src, &a.dest),
            Instruction::From(_) => Err(step_error(&text, "FROM inside a stage".into())),
            _ => Err(step_error(&text, "unknown instruction".into())),
        }
    }

    fn run(
        &mut self,
        st: &mut StageState,
        text: &str,
        run: &pd::RunInstruction,
    ) -> Result<(), BuildError> {
        if let Some(flag) = run.options.first() {
            return Err(step_error(
                text,
                format!("RUN --{}: not supported by capsa build", flag.name.value),
            ));
        }
        let argv = match (&run.arguments, run.here_docs.first()) {
            (Command::Shell(_), Some(doc)) => {
                let mut a = st.shell.clone();
                a.push(doc.value.to_string());
                a
            }
            (cmd, _) => argv(&st.shell, cmd),
        };
        // The stage's ARGs that ENV does not override reach the step as its environment,
        // and name it in the history (Docker's `|N K=V` prefix), so they key the cache.
        let env_names: BTreeSet<String> = env_list(&st.config)
            .iter()
            .filter_map(|e| e.split_once('=').map(|(k, _)| k.to_string()))
            .collect();
        let args: Vec<String> = st
            .args
            .iter()
            .filter(|(k, _)| !env_names.contains(*k))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let mut created_by = argv.join(" ");
        if !args.is_empty() {
            created_by = format!("|{} {} {created_by}", args.len(), args.join(" "));
        }
        let network = self.opts.network.as_deref().unwrap_or("bridge");
        let (network_mode, network_name) =
            crate::net::NetworkMode::parse(network).map_err(|e| step_error(text, e.to_string()))?;
        // Docker's predefined proxy arguments reach RUN without an ARG, and stay out of the
        // history and the cache key.
        let mut env = args;
        for name in PREDEFINED_ARGS {
            match self.opts.build_args.get(name) {
                Some(v) if !st.args.contains_key(name) => env.push(format!("{name}={v}")),
                _ => {}
            }
        }
        let spec = RunSpec {
            argv,
            env,
            workdir: Some(st.workdir()),
            user: st
                .config
                .get("User")
                .and_then(Value::as_str)
                .map(String::from),
            network: network_mode,
            network_name,
            add_hosts: self.opts.add_hosts.clone(),
            gateway_hosts: self.opts.gateway_hosts.clone(),
            shm_size: self.opts.shm_size,
            cgroup_parent: self.opts.cgroup_parent.clone(),
            isolation: self.opts.isolation,
        };
        // What the step's name lookups see keys the cache too (as BuildKit's extra hosts do):
        // a layer one build fetched through `--add-host pkgs:10.0.0.9` is not another's.
        let mut hosts: Vec<String> = (spec.add_hosts.iter())
            .map(|(name, ip)| format!("{name}:{ip}"))
            .chain(
                spec.gateway_hosts
                    .iter()
                    .map(|n| format!("{n}:host-gateway")),
            )
            .collect();
        hosts.sort();
        let hosts = hosts.join(",");
        let key: Vec<&str> = match hosts.is_empty() {
            true => vec!["run", &created_by, network],
            false => vec!["run", &created_by, network, &hosts],
        };
        self.step(st, &key, |b, st| {
            containers::run_step(
                &b.containers,
                st.image.clone(),
                &spec,
                &st.config,
                &created_by,
                text,
                b.on,
            )
        })
    }
}

fn object<'m>(config: &'m mut Map<String, Value>, key: &str) -> &'m mut Map<String, Value> {
    let v = config.entry(key).or_insert_with(|| json!({}));
    if !v.is_object() {
        *v = json!({});
    }
    v.as_object_mut().expect("made an object above")
}

fn step_error(step: &str, reason: String) -> BuildError {
    BuildError::Step {
        step: step.to_string(),
        reason,
    }
}
