//! The pipeline a user starts from: the seed's four default stages (Source, Build,
//! Test, Deploy), each with a first task to edit, valid and runnable as written.

use wharf_core::model::DEFAULT_STAGES;
use wharf_core::names::{NameError, PipelineName};

/// Starter YAML for a pipeline called `name`.
pub fn starter_yaml(name: &str) -> Result<String, NameError> {
    let name = PipelineName::new(name)?;
    let mut out = format!(
        "name: {name}\ndescription: A new pipeline; edit the tasks of each stage.\ntimeout: 60            # minutes; 0 = until done (cap 14 days)\nvariables:\n  GREETING: hello\nstages:\n"
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
        assert_eq!(names, ["Source", "Build", "Test", "Deploy"]);
        assert!(super::starter_yaml("../x").is_err());
    }
}
