//! placeholder: xml (being written)
