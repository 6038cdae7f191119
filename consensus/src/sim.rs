// simulator placeholder
