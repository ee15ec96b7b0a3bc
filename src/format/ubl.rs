//! placeholder: ubl (being written)
