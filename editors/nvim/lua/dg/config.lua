--- Options: merged once by `setup()`; each feature module owns its `defaults` and `validate`.
--- A bad value is reported (naming `section.key` and what was expected) and that key keeps its default.
local M = {}

--- Feature modules with options, in `setup()` order: `require('dg.' .. name)`.
M.sections = { 'server', 'ghost', 'keys' }

--- The merged options after `setup()`, nil before.
---@type table?
M.options = nil

--- Predicates for `check` specs.
M.is = {
  boolean = function(v) return type(v) == 'boolean' end,
  number = function(v) return type(v) == 'number' end,
  table = function(v) return type(v) == 'table' end,
  key = function(v) return v == false or (type(v) == 'string' and v ~= '') end,
  strings = function(v)
    if type(v) ~= 'table' or #v == 0 or not vim.islist(v) then
      return false
    end
    for _, s in ipairs(v) do
      if type(s) ~= 'string' or s == '' then
        return false
      end
    end
    return true
  end,
}

--- Check `opts` against `spec` (`{key = {predicate, expected}}`) in place; problems go to `problems`.
---@return table opts
function M.check(section, opts, defaults, spec, problems)
  for key, value in pairs(opts) do
    local rule = spec[key]
    if rule == nil then
      local known = vim.tbl_keys(spec)
      table.sort(known)
      problems[#problems + 1] =
        ('unknown option %s.%s: expected one of %s'):format(section, key, table.concat(known, ', '))
      opts[key] = nil
    elseif not rule[1](value) then
      problems[#problems + 1] = ('option %s.%s = %s is invalid: expected %s; using the default %s'):format(
        section, key, vim.inspect(value), rule[2], vim.inspect(defaults[key]))
      opts[key] = vim.deepcopy(defaults[key])
    end
  end
  return opts
end

--- Merge `user` over every section's defaults (one level: a given key replaces the default whole).
---@param user table?
---@return table options, string[] problems
function M.merge(user)
  user = user or {}
  local options, problems = {}, {}
  for key in pairs(type(user) == 'table' and user or {}) do
    if not vim.tbl_contains(M.sections, key) then
      problems[#problems + 1] =
        ('unknown option %s: expected one of %s'):format(key, table.concat(M.sections, ', '))
    end
  end
  for _, name in ipairs(M.sections) do
    local module = require('dg.' .. name)
    local given = type(user) == 'table' and user[name] or nil
    local opts = vim.deepcopy(module.defaults)
    if type(given) == 'table' then
      for key, value in pairs(given) do
        opts[key] = value
      end
    elseif given ~= nil then
      problems[#problems + 1] = ('option %s = %s is invalid: expected a table'):format(name, vim.inspect(given))
    end
    options[name] = module.validate(opts, problems)
  end
  return options, problems
end

--- Tell the user `message` (prefixed `dg: `). Scheduled: an error-level message echoed inside an
--- autocommand or an LSP handler would otherwise be raised as an error there.
function M.notify(message, level)
  vim.schedule(function() vim.notify('dg: ' .. message, level or vim.log.levels.INFO) end)
end

--- `setup()`'s merge: the first call wins; a later one only warns.
---@return table? options nil when setup already ran
function M.setup(user)
  if M.options then
    M.notify('setup() already ran; options are merged once per session', vim.log.levels.WARN)
    return nil
  end
  local options, problems = M.merge(user)
  if #problems > 0 then
    M.notify(table.concat(problems, '\ndg: '), vim.log.levels.WARN)
  end
  M.options = options
  return options
end

return M
