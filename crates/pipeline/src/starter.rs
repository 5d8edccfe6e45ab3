//! The pipeline a user starts from, the one definition `wharf init`, the API's
//! from-scratch route and the editor share: the seed's four default stages, that is the
//! Source (`source:`, left for the user to fill in) and the stages Build, Test and
//! Deploy, each with a first task to edit; valid and runnable as written; no timeout of
//! its own (the seed's default 0: until done, capped at 14 days).

use wharf_core::model::DEFAULT_STAGES;
use wharf_core::names::{NameError, PipelineName};

/// Starter YAML for a pipeline called `name`.
pub fn starter_yaml(name: &str) -> Result<String, NameError> {
    let name = PipelineName::new(name)?;
    let mut out = format!(
        "name: {name}\n\
         description: A new pipeline; edit the tasks of each stage.\n\
         timeout: 0              # minutes; 0 = until done (capped at 14 days)\n\
         # The Source stage: the repository every run checks out (none: runs start in an empty directory).\n\
         # source:\n\
         #   repo: https://github.com/you/app.git\n\
         #   branch: main\n\
         variables:\n  GREETING: hello\nstages:\n"
    );
    for stage in DEFAULT_STAGES {
        let task = stage.to_ascii_lowercase();
        out.push_str(&format!(
            "  - name: {stage}\n    tasks:\n      - name: {task}\n        type: script\n        script: |\n          echo \"${{GREETING}} from {stage}, run ${{BUILD_ID}}\"\n"
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_starter_validates_and_has_the_default_stages() {
        let yaml = super::starter_yaml("my-app").unwrap();
        let pipeline = crate::parse(&yaml).unwrap();
        let names: Vec<&str> = pipeline.stages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["Build", "Test", "Deploy"]);
        assert!(yaml.contains("# source:"), "the Source is there to fill in:\n{yaml}");
        assert!(pipeline.timeout.is_none_or(|t| t.as_std().is_zero()), "the seed's default: until done");
        assert!(super::starter_yaml("../x").is_err());
    }
}
