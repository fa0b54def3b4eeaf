--- Insert-mode keys, buffer-local in buffers the server is attached to. With no ghost text shown a key
--- does what it did before (`<Tab>` inserts a tab). Set a key to false to leave it unmapped.
local config = require('dg.config')
local M = {}

M.defaults = {
  accept = '<Tab>', -- all of the ghost text
  accept_line = '<M-C-Right>', -- up to the end of its next line
  accept_word = '<M-Right>', -- its next word
  dismiss = '<C-]>',
}

function M.validate(opts, problems)
  local rule = { config.is.key, 'a key (string) or false' }
  return config.check('keys', opts, M.defaults,
    { accept = rule, accept_line = rule, accept_word = rule, dismiss = rule }, problems)
end

local actions = {
  accept = { 'accept the ghost text', function(ghost, buf) return ghost.accept(buf, 'all') end },
  accept_line = { 'accept a line of the ghost text', function(ghost, buf) return ghost.accept(buf, 'line') end },
  accept_word = { 'accept a word of the ghost text', function(ghost, buf) return ghost.accept(buf, 'word') end },
  dismiss = { 'dismiss the ghost text', function(ghost, buf) return ghost.dismiss(buf) end },
}

function M.attach(bufnr)
  if not config.options.ghost.enabled or vim.b[bufnr].dg_keys then
    return
  end
  vim.b[bufnr].dg_keys = true
  for name, lhs in pairs(config.options.keys) do
    if lhs then
      local desc, run = actions[name][1], actions[name][2]
      vim.keymap.set('i', lhs, function()
        return run(require('dg.ghost'), bufnr) and '' or lhs
      end, { buffer = bufnr, expr = true, desc = 'dg: ' .. desc })
    end
  end
end

return M
