//! The engine library's errors as Docker answers them: one place that says which status
//! code each failure gets (404 for what does not exist, 409 for a conflict with the
//! state, 400 for a request that cannot work, 500 for the engine failing) and words the
//! messages clients match on ("No such container: X", "Conflict. The container name...").

use super::http::ApiError;
use crate::container::ContainerError;
use crate::image::ImageError;
use crate::volume::VolumeError;
use axum::http::StatusCode;

impl From<ContainerError> for ApiError {
    fn from(e: ContainerError) -> ApiError {
        match e {
            ContainerError::NotFound(name) => {
                ApiError::not_found(format!("No such container: {name}"))
            }
            ContainerError::Ambiguous(prefix) => ApiError::bad_request(format!(
                "multiple IDs found with provided prefix: {prefix}"
            )),
            ContainerError::NameInUse { name, id } => ApiError::conflict(format!(
                "Conflict. The container name \"/{name}\" is already in use by container \"{id}\". You have to remove (or rename) that container to be able to reuse that name."
            )),
            ContainerError::WrongState { .. } => ApiError::conflict(e.to_string()),
            ContainerError::InvalidArgument(_)
            | ContainerError::Invalid(_)
            | ContainerError::CopyTo { .. }
            | ContainerError::Exec { .. } => ApiError::bad_request(e.to_string()),
            ContainerError::Image(e) => from_image(e),
            ContainerError::Volume(e) => from_volume(e),
            ContainerError::Setup { .. }
            | ContainerError::Copy { .. }
            | ContainerError::Commit { .. }
            | ContainerError::Vm(_)
            | ContainerError::Io { .. } => ApiError::internal(e.to_string()),
        }
    }
}

/// An image error as Docker answers it ("No such image: X" is 404).
pub fn from_image(e: ImageError) -> ApiError {
    match e {
        ImageError::NotFound(name) => ApiError::not_found(format!("No such image: {name}")),
        ImageError::InvalidReference { .. } | ImageError::BadChange(_) => {
            ApiError::bad_request(e.to_string())
        }
        ImageError::Conflict(_) => ApiError::conflict(e.to_string()),
        _ => ApiError::internal(e.to_string()),
    }
}

/// A volume error as Docker answers it.
pub fn from_volume(e: VolumeError) -> ApiError {
    let status = match &e {
        VolumeError::NotFound(_) => StatusCode::NOT_FOUND,
        VolumeError::InUse { .. } => StatusCode::CONFLICT,
        VolumeError::InvalidName { .. } => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_errors_get_dockers_codes_and_words() {
        let e = ApiError::from(ContainerError::NotFound("web".into()));
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        assert_eq!(e.message, "No such container: web");
        let e = ApiError::from(ContainerError::NameInUse {
            name: "web".into(),
            id: "abc".into(),
        });
        assert_eq!(e.status, StatusCode::CONFLICT);
        assert!(e
            .message
            .starts_with("Conflict. The container name \"/web\""));
        let e = ApiError::from(ContainerError::InvalidArgument("--cpus".into()));
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = ApiError::from(ContainerError::Image(ImageError::NotFound("nope".into())));
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        assert_eq!(e.message, "No such image: nope");
    }
}
