//! Run reports: versioned JSON, JUnit XML, Markdown and HTML, written atomically
