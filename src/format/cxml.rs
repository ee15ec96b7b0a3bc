//! placeholder: cxml (being written)
